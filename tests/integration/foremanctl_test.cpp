// foremanctl as a user runs it: a subprocess (build/bin/foremanctl) against
// the in-process broker, its stdout, stderr and exit status checked against
// docs/client.md.

#include "broker_harness.hpp"

#include <catch2/catch.hpp>

#include <boost/json.hpp>

#include <algorithm>
#include <sstream>
#include <unistd.h>

using namespace foreman;
using namespace foreman::test;
using lease::WorkerState;

namespace {

namespace json = boost::json;

std::string foremanctl() { return std::string(FOREMAN_BIN_DIR) + "/foremanctl"; }

/// `foremanctl --socket <the broker's> ARGS...`.
ProcessResult ctl(const BrokerHarness& h, std::vector<std::string> args, const std::string& input = {}) {
    args.insert(args.begin(), {foremanctl(), "--socket", control_socket(h)});
    auto r = run_process(args, input);
    UNSCOPED_INFO("foremanctl " << args.back() << ": status " << r.status << "\nstdout: " << r.out
                                << "\nstderr: " << r.err);
    return r;
}

std::size_t line_count(const std::string& text) { return static_cast<std::size_t>(std::count(text.begin(), text.end(), '\n')); }

std::int64_t num(const json::value& v) { return v.is_uint64() ? static_cast<std::int64_t>(v.as_uint64()) : v.as_int64(); }

const std::string one_echo_pool = "[pool.echo]\npath = " + echo_worker() + "\nmax_instances = 1\n";

} // namespace

TEST_CASE("foremanctl status prints each pool and its workers' states", "[foremanctl]") {
    BrokerHarness h("[pool.echo]\npath = " + echo_worker() + "\nmin_idle = 2\nmax_instances = 2\n");
    REQUIRE(h.wait_for([](auto& s) { return count_state(s, "echo", WorkerState::idle) == 2; }));
    auto c = h.client();
    auto g = h.lease(*c, "echo", "alice");
    auto r = ctl(h, {"status"});
    CHECK(r.status == 0);
    CHECK(r.err.empty());
    CHECK_THAT(r.out, Catch::Contains("pool echo: queued 0, leases granted 1, workers 2"));
    CHECK_THAT(r.out, Catch::Contains("idle"));
    CHECK_THAT(r.out, Catch::Contains("leased"));
    CHECK_THAT(r.out, Catch::Contains(std::to_string(g.pid)));
    CHECK_THAT(r.out, Catch::Contains("alice"));
    CHECK_THAT(r.out, Catch::Contains(std::to_string(g.lease)));
    CHECK(h.broker().release(g.lease, c->id, static_cast<lease::Uid>(::getuid())));
}

TEST_CASE("foremanctl status --json prints the STATUS json on one line", "[foremanctl]") {
    BrokerHarness h("max_workers = 9\n[pool.echo]\npath = " + echo_worker() + "\nmin_idle = 1\n");
    REQUIRE(h.wait_for([](auto& s) { return count_state(s, "echo", WorkerState::idle) == 1; }));
    int pid = all_workers(h.snapshot()).at(0).pid;
    auto r = ctl(h, {"status", "--json"});
    REQUIRE(r.status == 0);
    CHECK(line_count(r.out) == 1);
    json::value v;
    REQUIRE_NOTHROW(v = json::parse(r.out));
    CHECK(num(v.at("version")) == 1000);
    CHECK(num(v.at("workers_total")) == 1);
    CHECK(num(v.at("max_workers")) == 9);
    auto& pool = v.at("pools").as_array().at(0);
    CHECK(pool.at("protocol").as_string() == "echo");
    CHECK(num(pool.at("queued")) == 0);
    CHECK(num(pool.at("leases_granted")) == 0);
    auto& w = pool.at("workers").as_array().at(0);
    CHECK(w.at("id").is_string());
    CHECK(num(w.at("pid")) == pid);
    CHECK(w.at("state").as_string() == "idle");
    CHECK(num(w.at("requests")) == 0);
    CHECK(w.at("user").is_string());
}

TEST_CASE("foremanctl lease -- CMD runs CMD on the worker connection and releases after it", "[foremanctl]") {
    BrokerHarness h(one_echo_pool);
    auto r = ctl(h, {"lease", "echo", "--", "sh", "-c", "echo hi; head -n1 >&2"});
    CHECK(r.status == 0);
    CHECK(r.err == "hi\n"); // CMD's stdout went to the worker, which echoed it to CMD's stdin
    CHECK(r.out.empty());
    REQUIRE(h.wait_for([](auto& s) { return count_state(s, "echo", WorkerState::idle) == 1; }));
    CHECK(h.snapshot().pools.at(0).leases_granted == 1);
}

TEST_CASE("foremanctl lease -- CMD exits with CMD's status", "[foremanctl]") {
    BrokerHarness h(one_echo_pool);
    CHECK(ctl(h, {"lease", "echo", "--", "sh", "-c", "exit 7"}).status == 7);
    CHECK(ctl(h, {"lease", "echo", "--", "sh", "-c", "kill -TERM $$"}).status == 128 + 15);
    CHECK(ctl(h, {"lease", "echo", "--", "/nonexistent/cmd"}).status == 127);
    // Each of them released its lease.
    REQUIRE(h.wait_for([](auto& s) { return count_state(s, "echo", WorkerState::idle) == 1; }));
}

TEST_CASE("foremanctl lease without a command copies stdin to the worker and its answer to stdout", "[foremanctl]") {
    BrokerHarness h(one_echo_pool);
    auto r = ctl(h, {"lease", "echo"}, "hello foreman\n");
    CHECK(r.status == 0);
    CHECK(r.out == "hello foreman\n");
    CHECK_THAT(r.err, Catch::StartsWith("lease "));
    REQUIRE(h.wait_for([](auto& s) { return count_state(s, "echo", WorkerState::idle) == 1; }));
}

TEST_CASE("foremanctl lease --detach prints the lease, and renew and release ID end it from another process",
          "[foremanctl]") {
    BrokerHarness h(one_echo_pool);
    auto r = ctl(h, {"lease", "echo", "--detach"});
    REQUIRE(r.status == 0);
    std::istringstream out(r.out);
    std::string word_lease, word_worker, word_ttl;
    std::uint64_t id = 0;
    int pid = 0, ttl = 0;
    out >> word_lease >> id >> word_worker >> pid >> word_ttl >> ttl;
    REQUIRE(word_lease == "lease");
    CHECK(word_worker == "worker");
    CHECK(word_ttl == "ttl");
    CHECK(ttl == 30000);
    // foremanctl has exited: the lease lives on.
    auto s = h.snapshot();
    auto w = all_workers(s).at(0);
    CHECK(w.pid == pid);
    CHECK(w.state == WorkerState::leased);
    REQUIRE(w.lease.has_value());
    CHECK(w.lease->id == id);

    auto renew = ctl(h, {"renew", std::to_string(id)});
    CHECK(renew.status == 0);
    CHECK(renew.out == "ttl 30000\n");
    auto release = ctl(h, {"release", std::to_string(id)});
    CHECK(release.status == 0);
    CHECK(release.out.empty());
    CHECK(release.err.empty());
    REQUIRE(h.wait_for([](auto& s) { return count_state(s, "echo", WorkerState::idle) == 1; }));
    // Released once: a second time is a refusal, one line, exit 1.
    auto again = ctl(h, {"release", std::to_string(id)});
    CHECK(again.status == 1);
    CHECK(line_count(again.err) == 1);
    CHECK_THAT(again.err, Catch::StartsWith("foremanctl: ") && Catch::Contains("no-such-lease"));
}

TEST_CASE("foremanctl register adds a pool to lease from and unregister drains it", "[foremanctl]") {
    BrokerHarness h(one_echo_pool);
    auto reg = ctl(h, {"register", "reg", "path=" + echo_worker(), "notify=foreman", "max_instances=1"});
    CHECK(reg.status == 0);
    REQUIRE(h.wait_for([](auto& s) { return s.pools.size() == 2; }));
    auto lease = ctl(h, {"lease", "reg", "--", "sh", "-c", "echo registered; head -n1 >&2"});
    CHECK(lease.status == 0);
    CHECK_THAT(lease.err, Catch::StartsWith("registered\n")); // perhaps "lease N expired: worker-ready" after it

    auto unreg = ctl(h, {"unregister", "reg"});
    CHECK(unreg.status == 0);
    auto after = ctl(h, {"lease", "reg", "--", "true"});
    CHECK(after.status == 1);
    CHECK_THAT(after.err, Catch::Contains("unknown-protocol"));
    REQUIRE(h.wait_for([](auto& s) {
        for (auto& p : s.pools)
            if (p.protocol == "reg" && !p.workers.empty()) return false;
        return true;
    }));
    auto dup = ctl(h, {"register", "echo", "path=" + echo_worker()});
    CHECK(dup.status == 1);
    CHECK_THAT(dup.err, Catch::Contains("exists"));
}

TEST_CASE("foremanctl finds the broker through --socket, then FOREMAN_SOCKET", "[foremanctl]") {
    BrokerHarness h(one_echo_pool);
    // --socket among the command's options.
    auto among = run_process({foremanctl(), "status", "--socket", control_socket(h)});
    CHECK(among.status == 0);
    CHECK_THAT(among.out, Catch::Contains("pool echo"));
    auto env = run_process({foremanctl(), "status"}, {}, {"FOREMAN_SOCKET=" + control_socket(h)});
    CHECK(env.status == 0);
    CHECK_THAT(env.out, Catch::Contains("pool echo"));
    // --socket wins over FOREMAN_SOCKET.
    auto both = run_process({foremanctl(), "--socket", control_socket(h), "status"}, {},
                            {"FOREMAN_SOCKET=/nonexistent/foreman.sock"});
    CHECK(both.status == 0);
    auto wrong = run_process({foremanctl(), "status"}, {}, {"FOREMAN_SOCKET=/nonexistent/foreman.sock"});
    CHECK(wrong.status == 3);
}

TEST_CASE("foremanctl errors are one line on stderr with the documented exit status", "[foremanctl]") {
    BrokerHarness h(one_echo_pool);
    auto refused = ctl(h, {"lease", "nosuch", "--", "true"});
    CHECK(refused.status == 1);
    CHECK(line_count(refused.err) == 1);
    CHECK_THAT(refused.err, Catch::StartsWith("foremanctl: ") && Catch::Contains("unknown-protocol"));
    CHECK(refused.out.empty());

    auto no_broker = run_process({foremanctl(), "--socket", h.dir() + "/nobody-here.sock", "status"});
    CHECK(no_broker.status == 3);
    CHECK(line_count(no_broker.err) == 1);
    CHECK_THAT(no_broker.err, Catch::StartsWith("foremanctl: "));

    auto usage = ctl(h, {"frobnicate"});
    CHECK(usage.status == 2);
    CHECK(line_count(usage.err) == 1);
    CHECK_THAT(usage.err, Catch::StartsWith("foremanctl: "));

    auto bad_id = ctl(h, {"release", "not-a-number"});
    CHECK(bad_id.status == 2);
    CHECK(line_count(bad_id.err) == 1);
}
