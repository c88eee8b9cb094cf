// The C API from C: build/tests/foreman_c_test (C11, -pedantic -Werror) run
// as a subprocess against the in-process broker, its exit status and output
// checked, and the broker's state after it.

#include "../integration/broker_harness.hpp"

#include <catch2/catch.hpp>

#include <string>
#include <vector>

using namespace foreman;
using namespace foreman::test;
using lease::WorkerState;

namespace {


ProcessResult run_c_test(const std::string& scenario, const std::string& arg, const std::vector<std::string>& env = {}) {
    auto r = run_process({FOREMAN_C_TEST, scenario, arg}, {}, env, 30s * sanitizer_slowdown);
    UNSCOPED_INFO("foreman_c_test " << scenario << ": status " << r.status << "\nstdout:\n"
                                    << r.out << "stderr:\n"
                                    << r.err);
    return r;
}

/// Every check the program made passed.
void check_passed(const ProcessResult& r) {
    CHECK(r.status == 0);
    CHECK_THAT(r.out, !Catch::Contains("not ok"));
    CHECK_THAT(r.out, Catch::Contains("all passed\n"));
}

/// A config with one echo pool; `limits` are more of its keys.
std::string echo_pool(const std::string& limits = {}) { return "[pool.echo]\npath = " + echo_worker() + "\n" + limits; }

bool no_lease_held(const lease::Snapshot& s) {
    for (auto& w : all_workers(s))
        if (w.state == WorkerState::leased) return false;
    return true;
}

} // namespace

TEST_CASE("C API: lease echo, echo bytes, renew, release; FAILs give their code and the broker's text",
          "[c_api]") {
    BrokerHarness h(echo_pool("max_instances = 1\n"));
    auto r = run_c_test("lease", control_socket(h));
    check_passed(r);
    CHECK_THAT(r.out, Catch::Contains("unknown-protocol text: no pool serves protocol nosuch\n"));
    CHECK_THAT(r.out, Catch::Contains("unknown-protocol error: LEASE nosuch: unknown-protocol: no pool serves protocol nosuch\n"));
    CHECK_THAT(r.out, Catch::Contains("no-such-lease error: RELEASE "));
    auto s = h.snapshot();
    REQUIRE(s.pools.size() == 1);
    CHECK(s.pools[0].leases_granted == 2);
    REQUIRE(s.pools[0].workers.size() == 1);
    CHECK_THAT(r.out, Catch::Contains(" worker " + std::to_string(s.pools[0].workers[0].pid) + " ttl 5000\n"));
    CHECK(h.wait_for(no_lease_held));
}

TEST_CASE("C API: a lease with wait_ms=0 while the only worker is leased fails busy", "[c_api]") {
    BrokerHarness h(echo_pool("max_instances = 1\n"));
    auto r = run_c_test("busy", control_socket(h));
    check_passed(r);
    // foreman_close ended the lease the program still held.
    CHECK(h.wait_for(no_lease_held));
}

TEST_CASE("C API: an EXPIRED line is queued on the connection and taken with foreman_take_expired", "[c_api]") {
    BrokerHarness h(echo_pool());
    auto r = run_c_test("expired", control_socket(h));
    check_passed(r);
    CHECK_THAT(r.out, Catch::Contains(" ttl\nok: it names the lease\n"));
}

TEST_CASE("C API: a detached lease survives foreman_close and is renewed and released from a new connection",
          "[c_api]") {
    BrokerHarness h(echo_pool());
    auto r = run_c_test("detach", control_socket(h));
    check_passed(r);
    CHECK(h.wait_for(no_lease_held));
}

TEST_CASE("C API: connect(NULL) finds the broker through FOREMAN_SOCKET", "[c_api]") {
    BrokerHarness h(echo_pool());
    auto r = run_c_test("default", "-", {"FOREMAN_SOCKET=" + control_socket(h)});
    CHECK(r.status == 0);
    CHECK_THAT(r.out, Catch::Contains("ok: lease through the default address\n"));
    CHECK(h.snapshot().pools.at(0).leases_granted == 1);
}

TEST_CASE("C API: connecting to a missing socket fails with FOREMAN_ERR_CONNECT naming the path", "[c_api]") {
    TempDir dir;
    std::string path = dir.path() + "/no-broker.sock";
    auto r = run_c_test("missing", path);
    check_passed(r);
    CHECK_THAT(r.out, Catch::Contains("connect error: cannot connect to " + path + ": No such file or directory\n"));
}

TEST_CASE("C API: a broker that hangs up, sends garbage, speaks another version or is full gives EOF, PROTOCOL, "
          "VERSION, OVERLOADED",
          "[c_api]") {
    TempDir dir;
    auto r = run_c_test("fake", dir.path());
    check_passed(r);
    CHECK_THAT(r.out, Catch::Contains("hangs-up error: the broker closed the connection\n"));
    CHECK_THAT(r.out, Catch::Contains("speaks-999 error: VERSION: version: the broker speaks protocol version 999"));
    CHECK_THAT(r.out, Catch::Contains("is-full error: broker: overloaded: too many clients\n"));
}
