// Per-user workers (PROTOCOL.md: per_user, max_instances_per_user, run_as,
// allow_root): a worker started for one user serves only that user for its
// whole life, and with run_as={user} runs as that user. The [root] cases
// create real users for the test (system_users.hpp) and remove them after.

#include "broker_harness.hpp"
#include "system_users.hpp"

#include "client/connection.hpp"
#include "client/error.hpp"

#include <catch2/catch.hpp>

#include <boost/json.hpp>

#include <fstream>
#include <set>
#include <sstream>
#include <unistd.h>

using namespace foreman;
using namespace foreman::test;
using protocol::FailCode;

namespace {


/// The NUL-separated strings of /proc/<pid>/<file> (cmdline, environ).
std::vector<std::string> proc_strings(int pid, const char* file) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/" + file, std::ios::binary);
    std::vector<std::string> out;
    std::string item;
    while (std::getline(in, item, '\0')) out.push_back(item);
    return out;
}

bool has(const std::vector<std::string>& v, const std::string& s) {
    return std::find(v.begin(), v.end(), s) != v.end();
}

/// The numbers after `key` ("Uid:", "Gid:", "Groups:") in /proc/<pid>/status.
std::vector<long> status_numbers(int pid, const std::string& key) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind(key, 0) != 0) continue;
        std::istringstream fields(line.substr(key.size()));
        std::vector<long> numbers;
        long n;
        while (fields >> n) numbers.push_back(n);
        return numbers;
    }
    FAIL("no " << key << " line in /proc/" << pid << "/status");
    return {};
}

// The tests end with leases held: a short grace lets the harness stop at once.
const char* per_user_pool = R"(
shutdown_grace_ms = 100
[pool.mine]
path = {self}
args = worker pid --for={user}
per_user = yes
notify = none
)";

const char* run_as_user_pool = R"(
shutdown_grace_ms = 100
[pool.mine]
path = {self}
args = worker pid
per_user = yes
run_as = {user}
notify = none
)";

/// Whether this test can create users; says why not when it cannot.
bool users_available() {
    if (SystemUsers::available()) return true;
    WARN("not root, or no useradd: run_as={user} needs a root broker and real users");
    return false;
}

} // namespace

TEST_CASE("a LEASE without user from a per_user pool fails bad-request", "[per_user]") {
    BrokerHarness h(per_user_pool);
    auto conn = client::Connection::connect(control_socket(h));
    try {
        conn.lease("mine");
        FAIL("a LEASE without user= was granted");
    } catch (const client::Error& e) {
        CHECK(e.is(FailCode::bad_request));
        CHECK_THAT(e.what(), Catch::Contains("user= is required"));
    }
    CHECK(h.snapshot().pools.at(0).workers_started == 0);
}

TEST_CASE("a per_user worker is started for one user with FOREMAN_USER and {user}, and serves only that user",
          "[per_user]") {
    BrokerHarness h(per_user_pool);
    auto c = h.client();
    Granted alice = h.lease(*c, "mine", "alice");
    CHECK(has(proc_strings(alice.pid, "environ"), "FOREMAN_USER=alice"));
    CHECK(has(proc_strings(alice.pid, "cmdline"), "--for=alice"));
    REQUIRE(h.broker().release(alice.lease, c->id, 0));

    // bob gets a worker of his own although alice's is idle...
    Granted bob = h.lease(*c, "mine", "bob");
    CHECK(bob.pid != alice.pid);
    CHECK(has(proc_strings(bob.pid, "environ"), "FOREMAN_USER=bob"));
    CHECK(has(proc_strings(bob.pid, "cmdline"), "--for=bob"));
    // ...and alice's next lease is on hers again.
    Granted again = h.lease(*c, "mine", "alice");
    CHECK(again.pid == alice.pid);
    CHECK(h.snapshot().pools.at(0).workers_started == 2);
}

TEST_CASE("one user's LEASEs wait for its one worker while other users proceed in parallel", "[per_user]") {
    BrokerHarness h(per_user_pool); // max_instances_per_user = 1 by default
    auto c = h.client();
    Granted first = h.lease(*c, "mine", "alice");
    lease::Ticket second = h.ask(*c, "mine", "alice");
    // Another user is not held up by alice's queue.
    Granted bob = h.lease(*c, "mine", "bob");
    CHECK(bob.pid != first.pid);
    auto s = h.snapshot();
    CHECK(s.pools.at(0).workers_started == 2); // alice's second LEASE started no worker
    CHECK(s.pools.at(0).queued == 1);
    CHECK_FALSE(c->wait_granted(second, 0ms));

    REQUIRE(h.broker().release(first.lease, c->id, 0));
    auto next = c->wait_granted(second);
    REQUIRE(next);
    CHECK(next->pid == first.pid); // serialised onto alice's one worker
    CHECK(h.snapshot().pools.at(0).workers_started == 2);
}

TEST_CASE("STATUS shows each worker's user and each user's leases, waiting LEASEs and workers",
          "[per_user][status]") {
    BrokerHarness h(per_user_pool);
    auto c = h.client();
    Granted alice = h.lease(*c, "mine", "alice");
    h.ask(*c, "mine", "alice"); // waits for alice's worker
    Granted bob = h.lease(*c, "mine", "bob");

    auto conn = client::Connection::connect(control_socket(h));
    const boost::json::value status = conn.status();
    const auto& pool = status.at("pools").at(0);
    std::map<std::int64_t, std::string> user_of;
    for (const auto& w : pool.at("workers").as_array())
        user_of[w.at("pid").to_number<std::int64_t>()] = std::string(w.at("user").as_string());
    CHECK(user_of == std::map<std::int64_t, std::string>{{alice.pid, "alice"}, {bob.pid, "bob"}});
    CHECK(pool.at("users") == boost::json::parse(R"([{"user":"alice","leases":1,"waiting":1,"workers":1},
                                                      {"user":"bob","leases":1,"waiting":0,"workers":1}])"));

    ProcessResult r = run_process({std::string(FOREMAN_BIN_DIR) + "/foremanctl", "status", "--socket",
                                   control_socket(h)});
    INFO(r.out << r.err);
    REQUIRE(r.status == 0);
    CHECK_THAT(r.out, Catch::Matches(R"([\s\S]*USER +LEASES +WAITING +WORKERS\n +alice +1 +1 +1\n +bob +1 +0 +1\n[\s\S]*)"));
}

TEST_CASE("run_as={user} runs each user's worker with that user's uid, gid and supplementary groups",
          "[per_user][root]") {
    if (!users_available()) return;
    SystemUsers users(2);
    BrokerHarness h(run_as_user_pool);
    auto c = h.client();
    for (std::size_t i = 0; i < 2; ++i) {
        const auto& u = users[i];
        INFO("user " << u.name);
        Granted g = h.lease(*c, "mine", u.name);
        const long uid = u.uid, gid = u.gid;
        CHECK(status_numbers(g.pid, "Uid:") == std::vector<long>{uid, uid, uid, uid});
        CHECK(status_numbers(g.pid, "Gid:") == std::vector<long>{gid, gid, gid, gid});
        auto groups = status_numbers(g.pid, "Groups:");
        std::set<long> expected{gid};
        if (i == 0) expected.insert(users.group_gid()); // only the first is in the extra group
        CHECK(std::set<long>(groups.begin(), groups.end()) == expected);
        CHECK(has(proc_strings(g.pid, "environ"), "FOREMAN_USER=" + u.name));
    }
}

TEST_CASE("run_as={user} with an unknown user fails that LEASE denied, and the pool keeps serving others",
          "[per_user][root]") {
    if (!users_available()) return;
    SystemUsers users(1);
    BrokerHarness h(run_as_user_pool);
    auto c = h.client();
    lease::Ticket t = h.ask(*c, "mine", "no-such-foreman-user");
    auto r = c->wait_rejected(t);
    REQUIRE(r);
    CHECK(r->code == FailCode::denied);
    CHECK(r->text == "pool mine runs workers as the leasing user: no such user 'no-such-foreman-user'");
    // Not a failed start: no back-off, the next user is served at once.
    CHECK(h.snapshot().pools.at(0).spawn_failures == 0);
    Granted g = h.lease(*c, "mine", users[0].name);
    CHECK(status_numbers(g.pid, "Uid:").at(0) == static_cast<long>(users[0].uid));
}

TEST_CASE("run_as={user} never runs a worker as root unless the pool says allow_root=yes", "[per_user][root]") {
    if (::geteuid() != 0) {
        WARN("not root: run_as={user} needs a root broker");
        return;
    }
    BrokerHarness h(R"(
shutdown_grace_ms = 100
[pool.guarded]
path = {self}
args = worker pid
per_user = yes
run_as = {user}
notify = none

[pool.trusting]
path = {self}
args = worker pid
per_user = yes
run_as = {user}
allow_root = yes
notify = none
)");
    auto c = h.client();
    lease::Ticket t = h.ask(*c, "guarded", "root");
    auto r = c->wait_rejected(t);
    REQUIRE(r);
    CHECK(r->code == FailCode::denied);
    CHECK(r->text == "pool guarded runs workers as the leasing user: 'root' is root; set allow_root=yes to allow it");
    CHECK(h.snapshot().pools.at(0).workers_started == 0);

    Granted g = h.lease(*c, "trusting", "root");
    CHECK(status_numbers(g.pid, "Uid:").at(0) == 0);
}
