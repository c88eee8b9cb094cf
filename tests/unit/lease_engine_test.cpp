// lease::Engine against docs/lease-engine.md and PROTOCOL.md's lifecycle
// rules: one TEST_CASE per rule, a fake clock (`Bed::t`, advanced by hand),
// no sleeps, no real clock.

#include "lease/engine.hpp"
#include "lease/worker_state.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <functional>
#include <random>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

using namespace foreman::lease;
using foreman::protocol::EndReason;
using foreman::protocol::FailCode;
using namespace std::chrono_literals;

namespace Catch {
template <> struct StringMaker<EndReason> {
    static std::string convert(EndReason r) { return std::string(foreman::protocol::to_string(r)); }
};
template <> struct StringMaker<FailCode> {
    static std::string convert(FailCode c) { return std::string(foreman::protocol::to_string(c)); }
};
template <> struct StringMaker<WorkerState> {
    static std::string convert(WorkerState s) { return std::string(foreman::lease::to_string(s)); }
};
template <> struct StringMaker<PoolChange> {
    static std::string convert(PoolChange c) {
        switch (c) {
        case PoolChange::ok: return "ok";
        case PoolChange::exists: return "exists";
        case PoolChange::unknown: return "unknown";
        case PoolChange::shutting_down: return "shutting_down";
        }
        return "?";
    }
};
template <> struct StringMaker<std::chrono::milliseconds> {
    static std::string convert(std::chrono::milliseconds m) { return std::to_string(m.count()) + "ms"; }
};
} // namespace Catch

namespace {

constexpr Uid uid_a = 1000;
constexpr ClientId setup_client = 99;

// ---- decisions ---------------------------------------------------------------

std::string describe(const Decisions& ds) {
    std::ostringstream os;
    os << ds.size() << " decision(s):";
    for (const Decision& d : ds) {
        os << "\n  ";
        std::visit(
            [&](const auto& x) {
                using T = std::decay_t<decltype(x)>;
                if constexpr (std::is_same_v<T, Grant>)
                    os << "Grant ticket=" << x.ticket << " client=" << x.client << " lease=" << x.lease
                       << " worker=" << x.worker << " pid=" << x.pid << " ttl=" << x.ttl.count();
                else if constexpr (std::is_same_v<T, Reject>)
                    os << "Reject ticket=" << x.ticket << " client=" << x.client
                       << " code=" << foreman::protocol::to_string(x.code) << " text=" << x.text;
                else if constexpr (std::is_same_v<T, Spawn>)
                    os << "Spawn worker=" << x.worker << " protocol=" << x.protocol << " user=" << x.user;
                else if constexpr (std::is_same_v<T, Terminate>)
                    os << "Terminate worker=" << x.worker << " pid=" << x.pid;
                else if constexpr (std::is_same_v<T, Kill>)
                    os << "Kill worker=" << x.worker << " pid=" << x.pid;
                else if constexpr (std::is_same_v<T, Expire>)
                    os << "Expire client=" << x.client << " lease=" << x.lease
                       << " reason=" << foreman::protocol::to_string(x.reason);
            },
            d);
    }
    return os.str();
}

/// The decisions of type T, in order.
template <class T> std::vector<T> all(const Decisions& ds) {
    std::vector<T> v;
    for (const Decision& d : ds)
        if (auto* x = std::get_if<T>(&d)) v.push_back(*x);
    return v;
}

template <class T> bool none(const Decisions& ds) { return all<T>(ds).empty(); }

/// The one decision of type T; fails the test if there is not exactly one.
template <class T> T one(const Decisions& ds) {
    auto v = all<T>(ds);
    INFO(describe(ds));
    REQUIRE(v.size() == 1);
    return v.front();
}

bool terminates(const Decisions& ds, WorkerId w) {
    auto v = all<Terminate>(ds);
    return std::any_of(v.begin(), v.end(), [&](const Terminate& t) { return t.worker == w; });
}

void append(Decisions& to, const Decisions& from) { to.insert(to.end(), from.begin(), from.end()); }

/// Limits with no jitter, so that max_requests and max_lifetime are exact.
PoolLimits limits() {
    PoolLimits l;
    l.recycle_jitter_pct = 0;
    return l;
}

// ---- the test bed --------------------------------------------------------------

/// One engine, a fake clock and the bookkeeping a broker would do (pids).
struct Bed {
    TimePoint t{};
    Engine engine;
    Ticket last_ticket = 0;
    int last_pid = 4000;
    std::map<WorkerId, int> pid_of;
    std::map<std::string, NotifyMode> notify_of;
    std::vector<LeaseId> granted; ///< every lease id seen in a Grant, in order

    explicit Bed(EngineOptions options = {}) : engine(options) {}

    Decisions seen(Decisions d) {
        for (const Grant& g : all<Grant>(d)) granted.push_back(g.lease);
        return d;
    }

    Decisions add(const std::string& protocol, const PoolLimits& l) {
        Decisions d;
        REQUIRE(engine.add_pool(t, protocol, l, d) == PoolChange::ok);
        notify_of[protocol] = l.notify;
        return seen(std::move(d));
    }

    LeaseRequest req(const std::string& protocol, ClientId client = 1, Uid uid = uid_a) {
        LeaseRequest r;
        r.ticket = ++last_ticket;
        r.client = client;
        r.uid = uid;
        r.protocol = protocol;
        return r;
    }
    LeaseRequest req_user(const std::string& protocol, const std::string& user, ClientId client = 1) {
        LeaseRequest r = req(protocol, client);
        r.user = user;
        return r;
    }

    Decisions ask(const LeaseRequest& r) {
        Decisions d;
        engine.request_lease(t, r, d);
        return seen(std::move(d));
    }
    Decisions start(WorkerId w) {
        Decisions d;
        const int pid = ++last_pid;
        pid_of[w] = pid;
        engine.worker_started(t, w, pid, d);
        return seen(std::move(d));
    }
    Decisions ready(WorkerId w) {
        Decisions d;
        engine.worker_ready(t, w, d);
        return seen(std::move(d));
    }
    /// Started and ready at once.
    Decisions up(WorkerId w) {
        Decisions d = start(w);
        append(d, ready(w));
        return d;
    }
    Decisions beat(WorkerId w) {
        Decisions d;
        engine.worker_heartbeat(t, w, d);
        return seen(std::move(d));
    }
    Decisions exited(WorkerId w) {
        Decisions d;
        engine.worker_exited(t, w, d);
        return seen(std::move(d));
    }
    Decisions said_stopping(WorkerId w) {
        Decisions d;
        engine.worker_stopping(t, w, d);
        return seen(std::move(d));
    }
    Decisions failed(WorkerId w, const std::string& error) {
        Decisions d;
        engine.spawn_failed(t, w, error, d);
        return seen(std::move(d));
    }
    /// RELEASE by the holder's own connection; must succeed.
    Decisions release(const Grant& g, Uid uid = uid_a) {
        Decisions d;
        REQUIRE(engine.release(t, g.lease, g.client, uid, d));
        return seen(std::move(d));
    }
    Decisions close(ClientId c) {
        Decisions d;
        engine.client_closed(t, c, d);
        return seen(std::move(d));
    }
    Decisions shutdown() {
        Decisions d;
        engine.begin_shutdown(t, d);
        return seen(std::move(d));
    }
    Decisions end_all() {
        Decisions d;
        engine.end_all(t, d);
        return seen(std::move(d));
    }
    Decisions remove(const std::string& protocol) {
        Decisions d;
        REQUIRE(engine.remove_pool(t, protocol, d) == PoolChange::ok);
        return seen(std::move(d));
    }

    /// Moves the clock to `target`, calling expire() at every deadline on the
    /// way, as the broker's single timer would.
    Decisions at(TimePoint target) {
        Decisions all_d;
        int stalls = 0;
        for (int i = 0; i < 100000; ++i) {
            auto next = engine.next_deadline();
            if (!next || *next > target) break;
            if (*next > t) t = *next;
            Decisions d;
            engine.expire(t, d);
            append(all_d, d);
            auto after = engine.next_deadline();
            if (after && *after <= t && d.empty()) {
                if (++stalls > 1000) FAIL("next_deadline() stays at or before now after expire(now)");
            } else {
                stalls = 0;
            }
        }
        if (target > t) t = target;
        Decisions d;
        engine.expire(t, d);
        append(all_d, d);
        return seen(std::move(all_d));
    }
    Decisions after(Millis d) { return at(t + d); }

    /// A fresh worker for `r`: the LEASE spawns one, which starts and is ready.
    Grant lease_fresh(const LeaseRequest& r) {
        Decisions d = ask(r);
        INFO(describe(d));
        REQUIRE(none<Grant>(d));
        REQUIRE(none<Reject>(d));
        const Spawn s = one<Spawn>(d);
        d = up(s.worker);
        const Grant g = one<Grant>(d);
        REQUIRE(g.ticket == r.ticket);
        REQUIRE(g.worker == s.worker);
        return g;
    }
    /// A grant from an idle worker, at once.
    Grant lease_now(const LeaseRequest& r) {
        Decisions d = ask(r);
        const Grant g = one<Grant>(d);
        REQUIRE(g.ticket == r.ticket);
        return g;
    }

    /// Brings up one idle worker per entry of `users` in a pool that has none:
    /// each serves one lease for that user, released in order 1 ms apart, so
    /// the first is the least and the last the most recently used.
    std::vector<WorkerId> idle_workers(const std::string& protocol, const std::vector<std::string>& users) {
        std::vector<WorkerId> spawned;
        std::vector<Ticket> tickets;
        for (const std::string& u : users) {
            LeaseRequest r = req_user(protocol, u, setup_client);
            tickets.push_back(r.ticket);
            Decisions d = ask(r);
            INFO(describe(d));
            REQUIRE(none<Grant>(d));
            REQUIRE(none<Reject>(d));
            for (const Spawn& s : all<Spawn>(d)) spawned.push_back(s.worker);
        }
        REQUIRE(spawned.size() == users.size());
        std::map<WorkerId, Grant> grants;
        for (WorkerId w : spawned)
            for (const Grant& g : all<Grant>(up(w))) grants[g.worker] = g;
        REQUIRE(grants.size() == users.size());
        for (WorkerId w : spawned) {
            after(1ms);
            release(grants.at(w));
            if (notify_of[protocol] == NotifyMode::foreman) ready(w);
            REQUIRE(state(w) == WorkerState::idle);
        }
        after(1ms);
        return spawned;
    }

    // ---- views ---------------------------------------------------------------
    Snapshot snap() const { return engine.snapshot(t); }
    std::optional<PoolView> pool(const std::string& protocol) const {
        for (const PoolView& p : snap().pools)
            if (p.protocol == protocol) return p;
        return std::nullopt;
    }
    std::optional<WorkerView> worker(WorkerId w) const {
        for (const PoolView& p : snap().pools)
            for (const WorkerView& v : p.workers)
                if (v.id == w) return v;
        return std::nullopt;
    }
    /// Its state; gone once the engine dropped it.
    WorkerState state(WorkerId w) const {
        auto v = worker(w);
        return v ? v->state : WorkerState::gone;
    }
    std::optional<LeaseView> lease(LeaseId id) const {
        for (const PoolView& p : snap().pools)
            for (const WorkerView& v : p.workers)
                if (v.lease && v.lease->id == id) return v.lease;
        return std::nullopt;
    }
    std::size_t queued(const std::string& protocol) const {
        auto p = pool(protocol);
        REQUIRE(p);
        return p->queued;
    }
};

} // namespace

// =============================================================================
// Granting
// =============================================================================

TEST_CASE("a LEASE with no idle worker starts one and is granted when it is ready", "[engine][grant]") {
    Bed b;
    b.add("echo", limits());
    const LeaseRequest r = b.req("echo", 7);
    Decisions d = b.ask(r);
    const Spawn s = one<Spawn>(d);
    CHECK(s.protocol == "echo");
    CHECK(none<Grant>(d));
    CHECK(none<Reject>(d));
    CHECK(b.state(s.worker) == WorkerState::starting);

    CHECK(none<Grant>(b.start(s.worker)));
    d = b.ready(s.worker);
    const Grant g = one<Grant>(d);
    CHECK(g.ticket == r.ticket);
    CHECK(g.client == 7);
    CHECK(g.worker == s.worker);
    CHECK(g.pid == b.pid_of[s.worker]);
    CHECK(g.ttl == 30000ms);
    CHECK(b.state(s.worker) == WorkerState::leased);
    CHECK(b.engine.live_leases() == 1);
}

TEST_CASE("a LEASE is granted at once by an idle worker", "[engine][grant]") {
    Bed b;
    b.add("echo", limits());
    auto ws = b.idle_workers("echo", {""});
    const LeaseRequest r = b.req("echo");
    Decisions d = b.ask(r);
    const Grant g = one<Grant>(d);
    CHECK(none<Spawn>(d));
    CHECK(g.worker == ws[0]);
    CHECK(g.pid == b.pid_of[ws[0]]);
    CHECK(g.ticket == r.ticket);
}

TEST_CASE("lease ids strictly increase", "[engine][grant]") {
    Bed b;
    b.add("a", limits());
    b.add("b", limits());
    b.idle_workers("a", {"", ""});
    b.idle_workers("b", {""});
    for (int i = 0; i < 10; ++i) {
        const Grant g = b.lease_now(b.req(i % 2 ? "a" : "b"));
        b.after(1ms);
        b.release(g);
    }
    REQUIRE(b.granted.size() == 13);
    for (std::size_t i = 1; i < b.granted.size(); ++i) CHECK(b.granted[i - 1] < b.granted[i]);
}

TEST_CASE("the same user gets the idle worker that last served it", "[engine][grant]") {
    Bed b;
    b.add("echo", limits());
    // carol's worker is the most recently used, alice's is in the middle.
    auto ws = b.idle_workers("echo", {"bob", "alice", "carol"});
    const Grant g = b.lease_now(b.req_user("echo", "alice"));
    CHECK(g.worker == ws[1]);
    const Grant h = b.lease_now(b.req_user("echo", "bob"));
    CHECK(h.worker == ws[0]);
}

TEST_CASE("otherwise the most recently used idle worker is chosen", "[engine][grant]") {
    Bed b;
    b.add("echo", limits());
    auto ws = b.idle_workers("echo", {"", ""}); // ws[1] most recently used
    const Grant g1 = b.lease_now(b.req("echo"));
    CHECK(g1.worker == ws[1]);
    b.after(1ms);
    const Grant g2 = b.lease_now(b.req("echo"));
    CHECK(g2.worker == ws[0]);
    b.after(1ms);
    b.release(g1);
    b.after(1ms);
    b.release(g2); // now ws[0] was both leased and released last
    b.after(1ms);
    const Grant g3 = b.lease_now(b.req_user("echo", "dave"));
    CHECK(g3.worker == ws[0]);
}

TEST_CASE("a worker that becomes ready serves the oldest waiting LEASE", "[engine][grant][queue]") {
    Bed b;
    b.add("echo", limits());
    const LeaseRequest r1 = b.req("echo", 1), r2 = b.req("echo", 2);
    const Spawn s1 = one<Spawn>(b.ask(r1));
    b.after(1ms);
    const Spawn s2 = one<Spawn>(b.ask(r2));
    CHECK(s1.worker != s2.worker);
    const Grant g = one<Grant>(b.up(s2.worker)); // the younger worker is ready first
    CHECK(g.ticket == r1.ticket);
    CHECK(g.worker == s2.worker);
    const Grant h = one<Grant>(b.up(s1.worker));
    CHECK(h.ticket == r2.ticket);
}

TEST_CASE("each waiting LEASE not covered by a starting worker starts one", "[engine][grant][queue]") {
    Bed b;
    b.add("echo", limits());
    std::vector<WorkerId> spawned;
    for (int i = 0; i < 3; ++i) {
        Decisions d = b.ask(b.req("echo"));
        CHECK(all<Spawn>(d).size() == 1);
        for (auto& s : all<Spawn>(d)) spawned.push_back(s.worker);
    }
    REQUIRE(spawned.size() == 3);
    // One is ready: it serves the oldest; the other two still cover the rest.
    Decisions d = b.up(spawned[0]);
    CHECK(all<Grant>(d).size() == 1);
    CHECK(none<Spawn>(d));
    CHECK(none<Spawn>(b.after(100ms)));
    CHECK(b.pool("echo")->workers.size() == 3);
}

TEST_CASE("RELEASE by the holder sends no EXPIRED and the worker is idle again", "[engine][end]") {
    Bed b;
    b.add("echo", limits());
    const Grant g = b.lease_fresh(b.req("echo"));
    Decisions d = b.release(g);
    CHECK(none<Expire>(d));
    CHECK(none<Terminate>(d));
    CHECK(b.state(g.worker) == WorkerState::idle);
    CHECK(b.engine.live_leases() == 0);
    Decisions ignored;
    CHECK_FALSE(b.engine.release(b.t, g.lease, g.client, uid_a, ignored)); // already ended
    CHECK_FALSE(b.engine.release(b.t, g.lease + 1000, g.client, uid_a, ignored)); // never existed
    CHECK_FALSE(b.engine.renew(b.t, g.lease, g.client, uid_a));
}

TEST_CASE("a released worker goes to the oldest waiting LEASE", "[engine][queue]") {
    Bed b;
    auto l = limits();
    l.max_instances = 1;
    b.add("echo", l);
    const Grant g = b.lease_fresh(b.req("echo"));
    const LeaseRequest r = b.req("echo", 2);
    CHECK(none<Grant>(b.ask(r)));
    const Grant h = one<Grant>(b.release(g));
    CHECK(h.ticket == r.ticket);
    CHECK(h.client == 2);
    CHECK(h.worker == g.worker);
    CHECK(h.lease > g.lease);
}

// =============================================================================
// The order of the LEASE checks and their FAIL codes
// =============================================================================

TEST_CASE("a LEASE for a pool that does not exist fails unknown-protocol", "[engine][reject]") {
    Bed b;
    b.add("echo", limits());
    const LeaseRequest r = b.req("nope", 3);
    const Reject j = one<Reject>(b.ask(r));
    CHECK(j.code == FailCode::unknown_protocol);
    CHECK(j.ticket == r.ticket);
    CHECK(j.client == 3);
}

TEST_CASE("version mismatch fails version", "[engine][reject]") {
    Bed b;
    auto l = limits();
    l.version = 1000;
    b.add("echo", l);
    b.idle_workers("echo", {""});
    LeaseRequest r = b.req("echo");
    r.version = 999;
    CHECK(one<Reject>(b.ask(r)).code == FailCode::version);
    r = b.req("echo");
    r.version = 1000;
    CHECK(all<Grant>(b.ask(r)).size() == 1);
}

TEST_CASE("ttl_ms below 100 or above lease_ttl is bad-request", "[engine][reject][ttl]") {
    Bed b;
    auto l = limits();
    l.lease_ttl = 5000ms;
    b.add("echo", l);
    b.idle_workers("echo", {""});
    LeaseRequest r = b.req("echo");
    r.ttl = 99ms;
    CHECK(one<Reject>(b.ask(r)).code == FailCode::bad_request);
    r = b.req("echo");
    r.ttl = 5001ms;
    CHECK(one<Reject>(b.ask(r)).code == FailCode::bad_request);

    r = b.req("echo");
    r.ttl = 100ms;
    Grant g = b.lease_now(r);
    CHECK(g.ttl == 100ms);
    b.release(g);
    r = b.req("echo");
    r.ttl = 5000ms;
    g = b.lease_now(r);
    CHECK(g.ttl == 5000ms);
}

TEST_CASE("per_user pools require user", "[engine][reject][per_user]") {
    Bed b;
    auto l = limits();
    l.per_user = true;
    b.add("echo", l);
    Decisions d = b.ask(b.req("echo"));
    CHECK(one<Reject>(d).code == FailCode::bad_request);
    CHECK(none<Spawn>(d));
}

TEST_CASE("LEASE checks come in the documented order", "[engine][reject]") {
    Bed b;
    auto l = limits();
    l.per_user = true;
    l.max_leases_per_user = 1;
    l.max_instances = 1;
    l.max_queue = 1;
    l.lease_ttl = 1000ms;
    b.add("echo", l);
    const Grant held = b.lease_fresh(b.req_user("echo", "alice"));

    SECTION("version before a missing user") {
        LeaseRequest r = b.req("echo");
        r.version = 1;
        CHECK(one<Reject>(b.ask(r)).code == FailCode::version);
    }
    SECTION("a missing user before a bad ttl") {
        LeaseRequest r = b.req("echo");
        r.ttl = 1ms;
        CHECK(one<Reject>(b.ask(r)).code == FailCode::bad_request);
    }
    SECTION("a bad ttl before max_leases_per_user") {
        LeaseRequest r = b.req_user("echo", "alice");
        r.ttl = 2000ms;
        CHECK(one<Reject>(b.ask(r)).code == FailCode::bad_request);
    }
    SECTION("max_leases_per_user before wait_ms=0") {
        LeaseRequest r = b.req_user("echo", "alice");
        r.wait = 0ms;
        CHECK(one<Reject>(b.ask(r)).code == FailCode::overloaded);
    }
    SECTION("wait_ms=0 before a full queue") {
        CHECK(none<Reject>(b.ask(b.req_user("echo", "bob")))); // fills the queue
        LeaseRequest r = b.req_user("echo", "carol");
        r.wait = 0ms;
        CHECK(one<Reject>(b.ask(r)).code == FailCode::busy);
    }
    SECTION("shutting-down before everything") {
        b.shutdown();
        LeaseRequest r = b.req("nope");
        r.version = 1;
        CHECK(one<Reject>(b.ask(r)).code == FailCode::shutting_down);
    }
    SECTION("unknown-protocol before version") {
        LeaseRequest r = b.req("nope");
        r.version = 1;
        CHECK(one<Reject>(b.ask(r)).code == FailCode::unknown_protocol);
    }
    CHECK(b.engine.renew(b.t, held.lease, held.client, uid_a)); // no check touched the live lease
}

// =============================================================================
// Waiting
// =============================================================================

TEST_CASE("a LEASE with wait_ms=0 fails busy when no worker is idle", "[engine][queue]") {
    Bed b;
    auto l = limits();
    SECTION("the pool has no worker") {
        b.add("echo", l);
    }
    SECTION("its only worker is leased") {
        l.max_instances = 1;
        b.add("echo", l);
        b.lease_fresh(b.req("echo"));
    }
    LeaseRequest r = b.req("echo", 5);
    r.wait = 0ms;
    const Reject j = one<Reject>(b.ask(r));
    CHECK(j.code == FailCode::busy);
    CHECK(j.ticket == r.ticket);
    CHECK(j.client == 5);
    CHECK(b.queued("echo") == 0);
}

TEST_CASE("a waiting LEASE fails busy at its deadline", "[engine][queue]") {
    Bed b;
    auto l = limits();
    l.max_instances = 1;
    b.add("echo", l);
    const Grant g = b.lease_fresh(b.req("echo"));
    const TimePoint t0 = b.t;
    LeaseRequest r = b.req("echo", 2);
    r.wait = 300ms;
    Decisions d = b.ask(r);
    CHECK(d.empty());
    CHECK(b.queued("echo") == 1);
    CHECK(none<Reject>(b.at(t0 + 299ms)));
    const Reject j = one<Reject>(b.at(t0 + 300ms));
    CHECK(j.code == FailCode::busy);
    CHECK(j.ticket == r.ticket);
    CHECK(b.queued("echo") == 0);
    CHECK(none<Grant>(b.release(g))); // the failed request is not served later
}

TEST_CASE("a LEASE without wait_ms waits the pool's queue_timeout", "[engine][queue]") {
    Bed b;
    auto l = limits();
    l.max_instances = 1;
    l.queue_timeout = 2000ms;
    b.add("echo", l);
    b.lease_fresh(b.req("echo"));
    const TimePoint t0 = b.t;
    const LeaseRequest r = b.req("echo", 2);
    CHECK(none<Reject>(b.ask(r)));
    CHECK(none<Reject>(b.at(t0 + 1999ms)));
    const Reject j = one<Reject>(b.at(t0 + 2000ms));
    CHECK(j.code == FailCode::busy);
    CHECK(j.ticket == r.ticket);
}

TEST_CASE("waiting LEASEs are served first come first served", "[engine][queue]") {
    Bed b;
    auto l = limits();
    l.max_instances = 1;
    b.add("echo", l);
    Grant g = b.lease_fresh(b.req("echo"));
    std::vector<LeaseRequest> waiting;
    for (ClientId c = 2; c <= 5; ++c) {
        waiting.push_back(b.req("echo", c));
        CHECK(none<Grant>(b.ask(waiting.back())));
        b.after(1ms);
    }
    CHECK(b.queued("echo") == 4);
    for (const LeaseRequest& r : waiting) {
        const Grant next = one<Grant>(b.release(g));
        CHECK(next.ticket == r.ticket);
        CHECK(next.client == r.client);
        g = next;
        b.after(1ms);
    }
    CHECK(b.queued("echo") == 0);
}

TEST_CASE("several users waiting are served round-robin, each user's LEASEs in order", "[engine][queue][fairness]") {
    Bed b;
    auto l = limits();
    l.max_instances = 1;
    b.add("echo", l);
    Grant g = b.lease_fresh(b.req("echo"));
    // alice queues three, then bob, carol and bob again.
    const std::vector<std::pair<std::string, ClientId>> asks{
        {"alice", 2}, {"alice", 2}, {"alice", 2}, {"bob", 3}, {"carol", 4}, {"bob", 3}};
    std::map<Ticket, std::string> name;
    for (const auto& [user, client] : asks) {
        const LeaseRequest r = b.req_user("echo", user, client);
        CHECK(none<Grant>(b.ask(r)));
        name[r.ticket] = user + std::to_string(std::count_if(name.begin(), name.end(), [&](const auto& n) {
                             return n.second.rfind(user, 0) == 0;
                         }) + 1);
        b.after(1ms);
    }
    std::vector<std::string> order;
    for (std::size_t i = 0; i < asks.size(); ++i) {
        g = one<Grant>(b.release(g));
        order.push_back(name.at(g.ticket));
        b.after(1ms);
    }
    CHECK(order == std::vector<std::string>{"alice1", "bob1", "carol1", "alice2", "bob2", "alice3"});
    CHECK(b.queued("echo") == 0);
}

namespace {

/// Light users' waits (LEASE to grant) in a pool of 3 workers over 60 s of
/// fake time: nine light users, each alone asking again after a random pause
/// (exponential, mean `think`) and holding each lease 5 to 15 ms; and, if
/// `greedy`, a tenth user who keeps 20 LEASEs waiting or held at all times.
std::vector<std::chrono::microseconds> light_user_waits(bool greedy, std::chrono::microseconds think) {
    using us = std::chrono::microseconds;
    constexpr int lights = 9;
    constexpr int greedy_depth = 20;
    constexpr us hold = 10ms;
    Bed b;
    auto l = limits();
    l.max_instances = 3;
    l.lease_ttl = 600s;
    l.queue_timeout = 600s;
    l.max_queue = 0;
    b.add("echo", l);
    b.idle_workers("echo", {"", "", ""});
    const TimePoint end = b.t + 60s;

    std::multimap<TimePoint, std::function<void()>> agenda;
    std::map<Ticket, std::pair<int, TimePoint>> asked; // ticket -> (user, when); user -1 is greedy
    std::vector<std::mt19937_64> rng;
    for (int u = -1; u < lights; ++u) rng.emplace_back(1000 + u); // rng[user + 1]; greedy is -1
    std::vector<us> waits;
    std::function<void(int)> ask;
    std::function<void(const Decisions&)> handle = [&](const Decisions& d) {
        for (const Grant& g : all<Grant>(d)) {
            auto [user, when] = asked.at(g.ticket);
            asked.erase(g.ticket);
            if (user >= 0) waits.push_back(std::chrono::duration_cast<us>(b.t - when));
            // Each lease is held 5 to 15 ms: with one fixed time the greedy
            // user's leases would all end at the same instants.
            const auto held = us(std::uniform_int_distribution<long long>(hold.count() / 2, hold.count() * 3 / 2)(
                rng[static_cast<std::size_t>(user + 1)]));
            agenda.emplace(b.t + held, [&, g, user = user] {
                handle(b.release(g));
                if (user < 0) {
                    ask(-1);
                } else {
                    std::exponential_distribution<double> pause(1.0 / static_cast<double>(think.count()));
                    agenda.emplace(b.t + us(static_cast<long long>(pause(rng[static_cast<std::size_t>(user + 1)]))),
                                   [&, user] { ask(user); });
                }
            });
        }
    };
    ask = [&](int user) {
        LeaseRequest r = b.req_user("echo", user < 0 ? "greedy" : "light" + std::to_string(user),
                                    static_cast<ClientId>(user + 2));
        asked[r.ticket] = {user, b.t};
        handle(b.ask(r));
    };
    for (int u = 0; u < lights; ++u) agenda.emplace(b.t + us(u * 1000), [&, u] { ask(u); });
    if (greedy)
        for (int i = 0; i < greedy_depth; ++i) ask(-1);
    while (!agenda.empty() && agenda.begin()->first < end) {
        auto [when, what] = *agenda.begin();
        agenda.erase(agenda.begin());
        handle(b.at(when));
        what();
    }
    return waits;
}

std::chrono::microseconds p99(std::vector<std::chrono::microseconds> v) {
    REQUIRE(!v.empty());
    std::sort(v.begin(), v.end());
    return v[(v.size() - 1) * 99 / 100];
}

/// The light users' waits without and with the greedy user.
struct Crowding {
    explicit Crowding(std::chrono::milliseconds think)
        : think(think), alone(light_user_waits(false, think)), crowded(light_user_waits(true, think)) {}
    std::string text() const {
        std::ostringstream os;
        os << "think " << think.count() << " ms: light p99 alone " << p99(alone).count() << " us over "
           << alone.size() << " leases, with the greedy user " << p99(crowded).count() << " us over "
           << crowded.size();
        return os.str();
    }
    std::chrono::milliseconds think;
    std::vector<std::chrono::microseconds> alone, crowded;
};

} // namespace

TEST_CASE("one greedy user does not starve nine light ones: their p99 wait stays within 2x",
          "[engine][queue][fairness]") {
    // Light users who keep the pool busy among themselves (a pause of 15 or
    // 5 ms between 10 ms leases: 3.6 and 6 workers' worth for 3 workers).
    // Measured: p99 1.5x and 1.3x of their wait alone. Plain FIFO would put
    // every light LEASE behind the greedy user's ~17 waiting ones: 5.5x and
    // 4.1x (~96 ms), at a third of the leases.
    auto think = GENERATE(15ms, 5ms);
    const Crowding c(think);
    INFO(c.text());
    CHECK(p99(c.crowded) <= 2 * p99(c.alone));
    // The greedy user takes one turn in ten: the light users keep most of their pace.
    CHECK(c.crowded.size() * 4 >= c.alone.size() * 3);
}

TEST_CASE("light users who leave the pool mostly idle wait at most about one lease for a greedy user",
          "[engine][queue][fairness]") {
    // Pauses of 100 and 35 ms: the light users alone find a worker idle
    // most of the time; the greedy user holds every worker, and no queue
    // order can serve a light LEASE before some lease ends. Round-robin
    // makes that the only cost: one lease (at most 15 ms) on top. Measured:
    // p99 4.2 -> 15.5 ms and 9.4 -> 20.1 ms; FIFO: 87 and 93 ms.
    auto think = GENERATE(100ms, 35ms);
    const Crowding c(think);
    INFO(c.text());
    CHECK(p99(c.alone) > 0us);
    CHECK(p99(c.crowded) <= p99(c.alone) + 15ms);
    CHECK(c.crowded.size() * 4 >= c.alone.size() * 3);
}

TEST_CASE("max_queue reached fails overloaded", "[engine][queue]") {
    Bed b;
    auto l = limits();
    l.max_instances = 1;
    l.max_queue = 2;
    b.add("echo", l);
    b.lease_fresh(b.req("echo"));
    CHECK(none<Reject>(b.ask(b.req("echo", 2))));
    CHECK(none<Reject>(b.ask(b.req("echo", 3))));
    const LeaseRequest r = b.req("echo", 4);
    const Reject j = one<Reject>(b.ask(r));
    CHECK(j.code == FailCode::overloaded);
    CHECK(j.ticket == r.ticket);
    CHECK(b.queued("echo") == 2);
}

// =============================================================================
// Renewal and the ways a lease ends
// =============================================================================

TEST_CASE("a lease not renewed within its ttl ends with reason ttl", "[engine][ttl]") {
    Bed b;
    auto l = limits();
    l.lease_ttl = 1000ms;
    b.add("echo", l);
    const Grant g = b.lease_fresh(b.req("echo"));
    const TimePoint t0 = b.t;
    CHECK(g.ttl == 1000ms);
    CHECK(none<Expire>(b.at(t0 + 999ms)));
    Decisions d = b.at(t0 + 1000ms);
    const Expire e = one<Expire>(d);
    CHECK(e.lease == g.lease);
    CHECK(e.client == g.client);
    CHECK(e.reason == EndReason::ttl);
    CHECK(none<Terminate>(d));
    CHECK(b.engine.live_leases() == 0);
    CHECK(b.state(g.worker) == WorkerState::idle);
    CHECK_FALSE(b.engine.renew(b.t, g.lease, g.client, uid_a));
}

TEST_CASE("a renewal sets the expiry to now plus ttl", "[engine][ttl]") {
    Bed b;
    auto l = limits();
    l.lease_ttl = 1000ms;
    b.add("echo", l);
    const Grant g = b.lease_fresh(b.req("echo"));
    const TimePoint t0 = b.t;
    b.at(t0 + 600ms);
    auto ttl = b.engine.renew(b.t, g.lease, g.client, uid_a);
    REQUIRE(ttl);
    CHECK(*ttl == 1000ms);
    auto v = b.lease(g.lease);
    REQUIRE(v);
    CHECK(v->expires_at == t0 + 1600ms);
    CHECK(none<Expire>(b.at(t0 + 1000ms)));
    CHECK(none<Expire>(b.at(t0 + 1599ms)));
    CHECK(one<Expire>(b.at(t0 + 1600ms)).reason == EndReason::ttl);
}

TEST_CASE("a renewal keeps the ttl the LEASE asked for", "[engine][ttl]") {
    Bed b;
    auto l = limits();
    l.lease_ttl = 10000ms;
    b.add("echo", l);
    LeaseRequest r = b.req("echo");
    r.ttl = 500ms;
    const Grant g = b.lease_fresh(r);
    CHECK(g.ttl == 500ms);
    const TimePoint t0 = b.t;
    b.at(t0 + 400ms);
    CHECK(b.engine.renew(b.t, g.lease, g.client, uid_a) == std::optional<Millis>(500ms));
    CHECK(none<Expire>(b.at(t0 + 899ms)));
    CHECK(one<Expire>(b.at(t0 + 900ms)).lease == g.lease);
}

TEST_CASE("WATCHDOG=1 from the worker renews its lease", "[engine][ttl][notify]") {
    Bed b;
    auto l = limits();
    l.notify = NotifyMode::systemd;
    l.lease_ttl = 1000ms;
    b.add("echo", l);
    const Grant g = b.lease_fresh(b.req("echo"));
    const TimePoint t0 = b.t;
    b.at(t0 + 800ms);
    CHECK(b.beat(g.worker).empty());
    auto v = b.lease(g.lease);
    REQUIRE(v);
    CHECK(v->expires_at == t0 + 1800ms);
    CHECK(none<Expire>(b.at(t0 + 1799ms)));
    const Expire e = one<Expire>(b.at(t0 + 1800ms));
    CHECK(e.reason == EndReason::ttl);
    CHECK(e.lease == g.lease);
}

TEST_CASE("READY=1 while leased with notify=foreman ends the lease with worker-ready", "[engine][notify]") {
    Bed b;
    auto l = limits();
    l.notify = NotifyMode::foreman;
    b.add("echo", l);
    const Grant g = b.lease_fresh(b.req("echo", 4));
    Decisions d = b.ready(g.worker);
    const Expire e = one<Expire>(d);
    CHECK(e.reason == EndReason::worker_ready);
    CHECK(e.lease == g.lease);
    CHECK(e.client == 4);
    CHECK(b.engine.live_leases() == 0);
    CHECK(b.state(g.worker) == WorkerState::idle);
    CHECK_FALSE(b.engine.renew(b.t, g.lease, g.client, uid_a));
    // It may be leased again at once.
    CHECK(b.lease_now(b.req("echo")).worker == g.worker);
}

TEST_CASE("with notify=foreman a worker whose lease ended by release is not leased again before READY=1",
          "[engine][notify]") {
    Bed b;
    auto l = limits();
    l.notify = NotifyMode::foreman;
    l.max_instances = 1;
    b.add("echo", l);
    const Grant g = b.lease_fresh(b.req("echo"));
    CHECK(none<Expire>(b.release(g)));
    CHECK(b.state(g.worker) == WorkerState::finishing);
    CHECK(public_name(b.state(g.worker)) == "starting");
    const LeaseRequest r = b.req("echo", 2);
    Decisions d = b.ask(r);
    CHECK(none<Grant>(d));
    CHECK(none<Reject>(d));
    d = b.ready(g.worker);
    const Grant h = one<Grant>(d);
    CHECK(h.ticket == r.ticket);
    CHECK(h.worker == g.worker);
    CHECK(none<Expire>(d));
}

TEST_CASE("with notify=foreman a worker whose lease ended by ttl owes READY=1", "[engine][notify][ttl]") {
    Bed b;
    auto l = limits();
    l.notify = NotifyMode::foreman;
    l.lease_ttl = 1000ms;
    b.add("echo", l);
    const Grant g = b.lease_fresh(b.req("echo"));
    CHECK(one<Expire>(b.after(1000ms)).reason == EndReason::ttl);
    CHECK(b.state(g.worker) == WorkerState::finishing);
    CHECK(none<Expire>(b.ready(g.worker)));
    CHECK(b.state(g.worker) == WorkerState::idle);
}

TEST_CASE("with notify=foreman a finishing worker without READY=1 within start_timeout is retired",
          "[engine][notify][timeout]") {
    Bed b;
    auto l = limits();
    l.notify = NotifyMode::foreman;
    l.start_timeout = 1000ms;
    b.add("echo", l);
    const Grant g = b.lease_fresh(b.req("echo"));
    b.after(5000ms); // longer than start_timeout while leased: irrelevant
    REQUIRE(b.state(g.worker) == WorkerState::leased);
    b.release(g);
    const TimePoint t1 = b.t;
    CHECK_FALSE(terminates(b.at(t1 + 999ms), g.worker));
    const Terminate k = one<Terminate>(b.at(t1 + 1000ms));
    CHECK(k.worker == g.worker);
    CHECK(k.pid == b.pid_of[g.worker]);
    CHECK(b.state(g.worker) == WorkerState::stopping);
}

TEST_CASE("with notify=foreman a worker whose holder closed its connection owes READY=1",
          "[engine][notify][client]") {
    Bed b;
    auto l = limits();
    l.notify = NotifyMode::foreman;
    b.add("echo", l);
    const Grant g = b.lease_fresh(b.req("echo", 1));
    CHECK(none<Expire>(b.close(1)));
    CHECK(b.state(g.worker) == WorkerState::finishing);
    Decisions d = b.ask(b.req("echo", 2));
    CHECK(none<Grant>(d));
    d = b.ready(g.worker);
    CHECK(one<Grant>(d).worker == g.worker);
}

TEST_CASE("with notify=systemd READY=1 while leased does not end the lease", "[engine][notify]") {
    Bed b;
    auto l = limits();
    l.notify = NotifyMode::systemd;
    b.add("echo", l);
    const Grant g = b.lease_fresh(b.req("echo"));
    Decisions d = b.ready(g.worker);
    CHECK(none<Expire>(d));
    CHECK(none<Grant>(d));
    CHECK(b.state(g.worker) == WorkerState::leased);
    CHECK(b.engine.live_leases() == 1);
    CHECK(b.engine.renew(b.t, g.lease, g.client, uid_a));
}

TEST_CASE("a worker exit ends its lease with worker-exit", "[engine][end]") {
    Bed b;
    b.add("echo", limits());
    const Grant g = b.lease_fresh(b.req("echo", 6));
    Decisions d = b.exited(g.worker);
    const Expire e = one<Expire>(d);
    CHECK(e.reason == EndReason::worker_exit);
    CHECK(e.lease == g.lease);
    CHECK(e.client == 6);
    CHECK(none<Terminate>(d));
    CHECK(none<Kill>(d));
    CHECK(b.engine.live_leases() == 0);
    CHECK(b.engine.workers_total() == 0);
    CHECK(b.state(g.worker) == WorkerState::gone);
}

TEST_CASE("a lease longer than max_processtime ends with processtime and its worker is terminated",
          "[engine][end][timeout]") {
    Bed b;
    auto l = limits();
    l.max_processtime = 2s;
    l.lease_ttl = 1500ms;
    l.kill_grace = 500ms;
    b.add("echo", l);
    const Grant g = b.lease_fresh(b.req("echo"));
    const TimePoint t0 = b.t;
    b.at(t0 + 1000ms);
    REQUIRE(b.engine.renew(b.t, g.lease, g.client, uid_a)); // renewals do not extend processtime
    CHECK(none<Expire>(b.at(t0 + 1999ms)));
    Decisions d = b.at(t0 + 2000ms);
    const Expire e = one<Expire>(d);
    CHECK(e.reason == EndReason::processtime);
    CHECK(e.lease == g.lease);
    const Terminate k = one<Terminate>(d);
    CHECK(k.worker == g.worker);
    CHECK(k.pid == b.pid_of[g.worker]);
    CHECK(b.state(g.worker) == WorkerState::stopping);
    CHECK(b.engine.live_leases() == 0);
    CHECK(none<Kill>(b.at(t0 + 2499ms)));
    const Kill kill = one<Kill>(b.at(t0 + 2500ms));
    CHECK(kill.worker == g.worker);
    CHECK(kill.pid == b.pid_of[g.worker]);
}

TEST_CASE("a leased worker silent for heartbeat_timeout is hung: lease ends worker-exit and the worker is "
          "terminated",
          "[engine][end][heartbeat]") {
    Bed b;
    auto l = limits();
    l.notify = NotifyMode::systemd;
    l.heartbeat_timeout = 500ms;
    b.add("echo", l);
    const Grant g = b.lease_fresh(b.req("echo"));
    const TimePoint t0 = b.t;
    b.at(t0 + 400ms);
    SECTION("WATCHDOG=1 resets the heartbeat timer") { CHECK(b.beat(g.worker).empty()); }
    SECTION("READY=1 resets the heartbeat timer") { CHECK(none<Expire>(b.ready(g.worker))); }
    CHECK(none<Expire>(b.at(t0 + 899ms)));
    CHECK(b.state(g.worker) == WorkerState::leased);
    Decisions d = b.at(t0 + 900ms);
    const Expire e = one<Expire>(d);
    CHECK(e.reason == EndReason::worker_exit);
    CHECK(e.lease == g.lease);
    const Terminate k = one<Terminate>(d);
    CHECK(k.worker == g.worker);
    CHECK(k.pid == b.pid_of[g.worker]);
    CHECK(b.state(g.worker) == WorkerState::stopping);
}

TEST_CASE("the heartbeat timeout does not apply to an idle worker", "[engine][heartbeat]") {
    Bed b;
    auto l = limits();
    l.notify = NotifyMode::systemd;
    l.heartbeat_timeout = 500ms;
    b.add("echo", l);
    auto ws = b.idle_workers("echo", {""});
    CHECK(none<Terminate>(b.after(10s)));
    CHECK(b.state(ws[0]) == WorkerState::idle);
}

TEST_CASE("with notify=none there is no heartbeat timeout", "[engine][heartbeat]") {
    Bed b;
    auto l = limits();
    l.notify = NotifyMode::none;
    l.heartbeat_timeout = 500ms;
    b.add("echo", l);
    const Grant g = b.lease_fresh(b.req("echo"));
    Decisions d = b.after(5s);
    CHECK(none<Expire>(d));
    CHECK(none<Terminate>(d));
    CHECK(b.state(g.worker) == WorkerState::leased);
}

// =============================================================================
// Connections and detached leases
// =============================================================================

TEST_CASE("closing a connection ends its non-detached leases without EXPIRED and drops its queued requests",
          "[engine][client]") {
    Bed b;
    auto l = limits();
    l.max_instances = 2;
    b.add("echo", l);
    const Grant plain = b.lease_fresh(b.req("echo", 1));
    LeaseRequest rd = b.req("echo", 1);
    rd.detach = true;
    const Grant detached = b.lease_fresh(rd);
    CHECK(none<Grant>(b.ask(b.req("echo", 1)))); // waits: max_instances
    CHECK(b.queued("echo") == 1);

    Decisions d = b.close(1);
    CHECK(none<Expire>(d));
    CHECK(none<Reject>(d)); // dropped unanswered
    CHECK(none<Grant>(d));  // the freed worker does not go to the closed connection
    CHECK(b.queued("echo") == 0);
    CHECK(b.engine.live_leases() == 1);
    CHECK(b.state(plain.worker) == WorkerState::idle);
    CHECK(b.state(detached.worker) == WorkerState::leased);
    CHECK_FALSE(b.engine.renew(b.t, plain.lease, 1, uid_a));
    auto v = b.lease(detached.lease);
    REQUIRE(v);
    CHECK(v->detached);
    CHECK(v->client == 0);
}

TEST_CASE("a detached lease outlives its connection and can be renewed and released by the same uid from "
          "another connection",
          "[engine][client]") {
    Bed b;
    b.add("echo", limits());
    LeaseRequest r = b.req("echo", 1, 500);
    r.detach = true;
    const Grant g = b.lease_fresh(r);
    CHECK(none<Expire>(b.close(1)));
    CHECK(b.engine.live_leases() == 1);
    b.after(1s);
    CHECK(b.engine.renew(b.t, g.lease, 2, 500) == std::optional<Millis>(30000ms));
    Decisions d;
    CHECK(b.engine.release(b.t, g.lease, 3, 500, d));
    CHECK(none<Expire>(d));
    CHECK(b.engine.live_leases() == 0);
    CHECK(b.state(g.worker) == WorkerState::idle);
}

TEST_CASE("another uid cannot renew or release a detached lease", "[engine][client]") {
    Bed b;
    b.add("echo", limits());
    LeaseRequest r = b.req("echo", 1, 500);
    r.detach = true;
    const Grant g = b.lease_fresh(r);
    SECTION("after its connection closed") { b.close(1); }
    SECTION("while its connection is open") {}
    Decisions d;
    CHECK_FALSE(b.engine.renew(b.t, g.lease, 2, 501));
    CHECK_FALSE(b.engine.release(b.t, g.lease, 2, 501, d));
    CHECK(b.engine.live_leases() == 1);
    CHECK(b.engine.release(b.t, g.lease, 2, 500, d));
}

TEST_CASE("another connection cannot release a non-detached lease", "[engine][client]") {
    Bed b;
    b.add("echo", limits());
    const Grant g = b.lease_fresh(b.req("echo", 1, 500));
    Decisions d;
    CHECK_FALSE(b.engine.renew(b.t, g.lease, 2, 500));
    CHECK_FALSE(b.engine.release(b.t, g.lease, 2, 500, d));
    CHECK(b.engine.live_leases() == 1);
    CHECK(b.engine.renew(b.t, g.lease, 1, 500));
    CHECK(b.engine.release(b.t, g.lease, 1, 500, d));
    CHECK(b.engine.live_leases() == 0);
}

TEST_CASE("EXPIRED is sent only while the holder is connected", "[engine][client][ttl]") {
    Bed b;
    auto l = limits();
    l.lease_ttl = 1000ms;
    b.add("echo", l);
    LeaseRequest r = b.req("echo", 1);
    r.detach = true;
    const Grant g = b.lease_fresh(r);
    const TimePoint t0 = b.t;
    SECTION("its connection closed") {
        b.close(1);
        Decisions d = b.at(t0 + 1000ms);
        CHECK(none<Expire>(d));
    }
    SECTION("its connection is still open") {
        const Expire e = one<Expire>(b.at(t0 + 1000ms));
        CHECK(e.client == 1);
        CHECK(e.lease == g.lease);
        CHECK(e.reason == EndReason::ttl);
    }
    CHECK(b.engine.live_leases() == 0); // it ended by ttl either way
    CHECK(b.state(g.worker) == WorkerState::idle);
}

TEST_CASE("a LEASE that waited is granted with the ttl it asked for", "[engine][queue][ttl]") {
    Bed b;
    auto l = limits();
    l.max_instances = 1;
    b.add("echo", l);
    const Grant g = b.lease_fresh(b.req("echo", 1));
    LeaseRequest r = b.req("echo", 2);
    r.ttl = 700ms;
    CHECK(none<Grant>(b.ask(r)));
    b.after(1s);
    const Grant h = one<Grant>(b.release(g));
    CHECK(h.ticket == r.ticket);
    CHECK(h.ttl == 700ms);
    const TimePoint granted = b.t;
    CHECK(none<Expire>(b.at(granted + 699ms)));
    const Expire e = one<Expire>(b.at(granted + 700ms));
    CHECK(e.lease == h.lease);
    CHECK(e.client == 2);
}

// =============================================================================
// Worker limits and timers
// =============================================================================

TEST_CASE("a worker at max_requests is retired when its lease ends", "[engine][limits]") {
    Bed b;
    auto l = limits();
    l.max_requests = 2;
    l.lease_ttl = 1000ms;
    b.add("echo", l);
    const Grant g1 = b.lease_fresh(b.req("echo"));
    CHECK(none<Terminate>(b.release(g1)));
    CHECK(b.state(g1.worker) == WorkerState::idle);
    const Grant g2 = b.lease_now(b.req("echo"));
    CHECK(g2.worker == g1.worker);
    CHECK(b.worker(g1.worker)->requests == 2);
    Decisions d;
    SECTION("ended by RELEASE") { d = b.release(g2); }
    SECTION("ended by ttl") {
        d = b.after(1000ms);
        CHECK(one<Expire>(d).reason == EndReason::ttl);
    }
    const Terminate k = one<Terminate>(d);
    CHECK(k.worker == g1.worker);
    CHECK(k.pid == b.pid_of[g1.worker]);
    CHECK(b.state(g1.worker) == WorkerState::stopping);
    // The next LEASE needs another worker.
    d = b.ask(b.req("echo"));
    CHECK(none<Grant>(d));
    CHECK(all<Spawn>(d).size() == 1);
}

TEST_CASE("an idle worker is retired after max_idletime", "[engine][limits][idle]") {
    Bed b;
    auto l = limits();
    l.max_idletime = 10s;
    b.add("echo", l);
    auto ws = b.idle_workers("echo", {""});
    const TimePoint t1 = b.t - 1ms; // idle_workers released it 1 ms ago
    CHECK(none<Terminate>(b.at(t1 + 9999ms)));
    const Terminate k = one<Terminate>(b.at(t1 + 10s));
    CHECK(k.worker == ws[0]);
    CHECK(k.pid == b.pid_of[ws[0]]);
    CHECK(b.state(ws[0]) == WorkerState::stopping);
}

TEST_CASE("a lease restarts the idle period", "[engine][limits][idle]") {
    Bed b;
    auto l = limits();
    l.max_idletime = 10s;
    b.add("echo", l);
    auto ws = b.idle_workers("echo", {""});
    b.after(9s);
    const Grant g = b.lease_now(b.req("echo"));
    b.after(5s);
    b.release(g);
    const TimePoint t1 = b.t;
    CHECK(none<Terminate>(b.at(t1 + 9999ms)));
    CHECK(one<Terminate>(b.at(t1 + 10s)).worker == ws[0]);
}

TEST_CASE("idle workers at min_idle are not retired for idleness", "[engine][limits][idle]") {
    Bed b;
    auto l = limits();
    l.max_idletime = 10s;
    SECTION("one idle worker, min_idle=1") {
        l.min_idle = 1;
        const Spawn s = one<Spawn>(b.add("echo", l));
        b.up(s.worker);
        CHECK(none<Terminate>(b.after(60s)));
        CHECK(b.state(s.worker) == WorkerState::idle);
    }
    SECTION("three idle workers, min_idle=1: two retire") {
        b.add("echo", l);
        auto ws = b.idle_workers("echo", {"", "", ""});
        l.min_idle = 1;
        Decisions d;
        REQUIRE(b.engine.update_pool(b.t, "echo", l, false, d) == PoolChange::ok);
        CHECK(none<Spawn>(d));
        d = b.after(60s);
        CHECK(all<Terminate>(d).size() == 2);
        std::size_t idle = 0;
        for (WorkerId w : ws) idle += b.state(w) == WorkerState::idle;
        CHECK(idle == 1);
    }
}

TEST_CASE("max_lifetime never retires a leased worker, it retires it when the lease ends", "[engine][limits]") {
    Bed b;
    auto l = limits();
    l.max_lifetime = 10s;
    l.lease_ttl = 30000ms;
    b.add("echo", l);
    const Grant g = b.lease_fresh(b.req("echo"));
    Decisions d = b.after(20s);
    CHECK(none<Terminate>(d));
    CHECK(none<Expire>(d));
    CHECK(b.state(g.worker) == WorkerState::leased);
    d = b.release(g);
    CHECK(one<Terminate>(d).worker == g.worker);
    CHECK(b.state(g.worker) == WorkerState::stopping);
}

TEST_CASE("an idle worker past its max_lifetime is retired", "[engine][limits]") {
    Bed b;
    auto l = limits();
    l.max_lifetime = 10s;
    b.add("echo", l);
    const TimePoint t0 = b.t; // its spawn
    auto ws = b.idle_workers("echo", {""});
    CHECK(none<Terminate>(b.at(t0 + 9999ms)));
    CHECK(one<Terminate>(b.at(t0 + 10s)).worker == ws[0]);
}

TEST_CASE("a worker that said STOPPING=1 gets no new lease and is retired when its lease ends",
          "[engine][limits][notify]") {
    Bed b;
    auto l = limits();
    l.notify = NotifyMode::systemd;
    b.add("echo", l);
    SECTION("said while leased") {
        const Grant g = b.lease_fresh(b.req("echo"));
        CHECK(none<Expire>(b.said_stopping(g.worker)));
        CHECK(b.engine.live_leases() == 1);
        CHECK(one<Terminate>(b.release(g)).worker == g.worker);
        Decisions d = b.ask(b.req("echo"));
        CHECK(none<Grant>(d));
    }
    SECTION("said while idle") {
        auto ws = b.idle_workers("echo", {""});
        b.said_stopping(ws[0]);
        Decisions d = b.ask(b.req("echo"));
        CHECK(none<Grant>(d));
        CHECK(all<Spawn>(d).size() == 1);
    }
}

TEST_CASE("a worker not ready within start_timeout is terminated, then killed after kill_grace",
          "[engine][timeout]") {
    Bed b;
    auto l = limits();
    l.start_timeout = 1000ms;
    l.kill_grace = 500ms;
    l.queue_timeout = 600000ms;
    b.add("echo", l);
    const TimePoint t0 = b.t;
    const Spawn s = one<Spawn>(b.ask(b.req("echo")));
    b.start(s.worker);
    CHECK_FALSE(terminates(b.at(t0 + 999ms), s.worker));
    const Terminate k = one<Terminate>(b.at(t0 + 1000ms));
    CHECK(k.worker == s.worker);
    CHECK(k.pid == b.pid_of[s.worker]);
    CHECK(b.state(s.worker) == WorkerState::stopping);
    CHECK(none<Kill>(b.at(t0 + 1499ms)));
    const Kill kill = one<Kill>(b.at(t0 + 1500ms));
    CHECK(kill.worker == s.worker);
    CHECK(kill.pid == b.pid_of[s.worker]);
    // It never was ready: its exit counts as a failed start.
    b.exited(s.worker);
    auto p = b.pool("echo");
    REQUIRE(p);
    CHECK(p->spawn_failures == 1);
    CHECK(p->backoff_until.has_value());
}

TEST_CASE("a retired worker that exits within kill_grace is not killed", "[engine][timeout]") {
    Bed b;
    auto l = limits();
    l.max_idletime = 1s;
    l.kill_grace = 500ms;
    b.add("echo", l);
    auto ws = b.idle_workers("echo", {""});
    REQUIRE(one<Terminate>(b.after(1s)).worker == ws[0]);
    b.after(100ms);
    CHECK(b.exited(ws[0]).empty());
    CHECK(none<Kill>(b.after(10s)));
    CHECK(b.state(ws[0]) == WorkerState::gone);
    CHECK(b.engine.workers_total() == 0);
}

// =============================================================================
// Pool and global caps
// =============================================================================

TEST_CASE("max_instances caps the pool's workers including stopping ones", "[engine][caps]") {
    Bed b;
    auto l = limits();
    l.max_instances = 2;
    l.max_requests = 1;
    b.add("echo", l);
    const Grant g1 = b.lease_fresh(b.req("echo", 1));
    const Grant g2 = b.lease_fresh(b.req("echo", 2));
    CHECK(one<Terminate>(b.release(g1)).worker == g1.worker); // max_requests=1
    const LeaseRequest r = b.req("echo", 3);
    Decisions d = b.ask(r);
    CHECK(none<Spawn>(d)); // 1 leased + 1 stopping = max_instances
    CHECK(none<Grant>(d));
    d = b.exited(g1.worker);
    const Spawn s = one<Spawn>(d);
    CHECK(one<Grant>(b.up(s.worker)).ticket == r.ticket);
    CHECK(b.pool("echo")->workers.size() == 2);
    CHECK(b.state(g2.worker) == WorkerState::leased);
}

TEST_CASE("min_idle workers are spawned when the pool is added and replaced when one exits",
          "[engine][caps][min_idle]") {
    Bed b;
    auto l = limits();
    l.min_idle = 2;
    Decisions d = b.add("echo", l);
    auto spawns = all<Spawn>(d);
    REQUIRE(spawns.size() == 2);
    for (const Spawn& s : spawns) CHECK(s.protocol == "echo");
    for (const Spawn& s : spawns) CHECK(none<Spawn>(b.up(s.worker)));
    CHECK(b.state(spawns[0].worker) == WorkerState::idle);
    CHECK(b.state(spawns[1].worker) == WorkerState::idle);
    CHECK(none<Spawn>(b.after(1s)));
    d = b.exited(spawns[0].worker);
    CHECK(all<Spawn>(d).size() == 1);
}

TEST_CASE("leasing a min_idle worker starts another to keep min_idle idle", "[engine][caps][min_idle]") {
    Bed b;
    auto l = limits();
    l.min_idle = 1;
    const Spawn s = one<Spawn>(b.add("echo", l));
    b.up(s.worker);
    Decisions d = b.ask(b.req("echo"));
    CHECK(one<Grant>(d).worker == s.worker);
    CHECK(all<Spawn>(d).size() == 1);
}

TEST_CASE("at the global cap the least recently used idle worker of another pool is retired to make room",
          "[engine][caps]") {
    EngineOptions o;
    o.max_workers = 3;
    Bed b(o);
    b.add("a", limits());
    b.add("b", limits());
    b.add("c", limits());
    auto wa = b.idle_workers("a", {"", ""}); // wa[0] least recently used of all
    auto wc = b.idle_workers("c", {""});     // the most recently used
    const LeaseRequest r = b.req("b", 2);
    Decisions d = b.ask(r);
    const Terminate k = one<Terminate>(d);
    CHECK(k.worker == wa[0]);
    CHECK(none<Spawn>(d)); // the stopping one still counts until it exits
    CHECK(b.state(wa[1]) == WorkerState::idle);
    CHECK(b.state(wc[0]) == WorkerState::idle);
    CHECK(none<Terminate>(b.after(10ms))); // no more retired than needed
    d = b.exited(wa[0]);
    const Spawn s = one<Spawn>(d);
    CHECK(s.protocol == "b");
    CHECK(one<Grant>(b.up(s.worker)).ticket == r.ticket);
    CHECK(b.engine.workers_total() == 3);
}

TEST_CASE("at the global cap a LEASE waits, and a worker that goes idle in another pool is retired to make room",
          "[engine][caps]") {
    EngineOptions o;
    o.max_workers = 1;
    Bed b(o);
    b.add("a", limits());
    b.add("b", limits());
    const Grant g = b.lease_fresh(b.req("a"));
    const LeaseRequest r = b.req("b", 2);
    Decisions d = b.ask(r);
    CHECK(none<Spawn>(d));
    CHECK(none<Terminate>(d)); // a leased worker is never retired for the cap
    CHECK(none<Reject>(d));
    CHECK(b.queued("b") == 1);
    // a's lease ends: its now idle worker is the LRU idle worker of another pool.
    d = b.release(g);
    INFO(describe(d));
    CHECK(terminates(d, g.worker));
    d = b.exited(g.worker);
    auto spawns = all<Spawn>(d);
    REQUIRE(spawns.size() == 1);
    CHECK(spawns[0].protocol == "b");
    CHECK(one<Grant>(b.up(spawns[0].worker)).ticket == r.ticket);
}

TEST_CASE("set_max_workers lowers the global cap for new workers", "[engine][caps]") {
    Bed b;
    b.add("a", limits());
    b.lease_fresh(b.req("a"));
    Decisions d;
    b.engine.set_max_workers(b.t, 1, d);
    CHECK(none<Terminate>(d)); // a leased worker is never retired for the cap
    d = b.ask(b.req("a", 2));
    CHECK(none<Spawn>(d));
    CHECK(b.snap().max_workers == 1);
}

// =============================================================================
// Back-off
// =============================================================================

TEST_CASE("a pool whose workers die before ready backs off 100ms doubling to 30s", "[engine][backoff]") {
    Bed b;
    auto l = limits();
    l.queue_timeout = 600000ms;
    b.add("echo", l);
    WorkerId w = one<Spawn>(b.ask(b.req("echo"))).worker;
    const std::vector<Millis> expected{100ms,  200ms,  400ms,   800ms,   1600ms,  3200ms,
                                       6400ms, 12800ms, 25600ms, 30000ms, 30000ms};
    std::uint32_t failures = 0;
    for (Millis delay : expected) {
        INFO("after failure " << failures + 1 << ", expecting " << delay.count() << "ms");
        b.start(w);
        b.after(10ms);
        Decisions d = b.exited(w);
        ++failures;
        CHECK(none<Spawn>(d));
        auto p = b.pool("echo");
        REQUIRE(p);
        CHECK(p->spawn_failures == failures);
        REQUIRE(p->backoff_until.has_value());
        CHECK(*p->backoff_until == b.t + delay);
        const TimePoint end = b.t + delay;
        CHECK(none<Spawn>(b.at(end - 1ms)));
        d = b.at(end);
        const Spawn s = one<Spawn>(d);
        w = s.worker;
    }
}

TEST_CASE("one ready worker resets the back-off", "[engine][backoff]") {
    Bed b;
    auto l = limits();
    l.queue_timeout = 600000ms;
    b.add("echo", l);
    WorkerId w = one<Spawn>(b.ask(b.req("echo"))).worker;
    for (int i = 0; i < 2; ++i) {
        b.start(w);
        b.exited(w);
        REQUIRE(b.pool("echo")->backoff_until);
        w = one<Spawn>(b.at(*b.pool("echo")->backoff_until)).worker;
    }
    REQUIRE(b.pool("echo")->spawn_failures == 2);
    CHECK(all<Grant>(b.up(w)).size() == 1);
    auto p = b.pool("echo");
    CHECK(p->spawn_failures == 0);
    CHECK_FALSE(p->backoff_until.has_value());
    // The next failure starts again at 100 ms.
    w = one<Spawn>(b.ask(b.req("echo", 2))).worker;
    b.start(w);
    b.exited(w);
    p = b.pool("echo");
    CHECK(p->spawn_failures == 1);
    REQUIRE(p->backoff_until);
    CHECK(*p->backoff_until == b.t + 100ms);
}

TEST_CASE("spawn_failed counts toward back-off and its error text appears in the spawn-failed reply",
          "[engine][backoff]") {
    Bed b;
    auto l = limits();
    l.queue_timeout = 600000ms;
    b.add("echo", l);
    const Spawn s = one<Spawn>(b.ask(b.req("echo")));
    Decisions d = b.failed(s.worker, "exec /opt/echo: No such file or directory");
    CHECK(none<Spawn>(d));
    auto p = b.pool("echo");
    REQUIRE(p);
    CHECK(p->spawn_failures == 1);
    CHECK(p->last_spawn_error == "exec /opt/echo: No such file or directory");
    REQUIRE(p->backoff_until);
    CHECK(*p->backoff_until == b.t + 100ms);
    CHECK(b.state(s.worker) == WorkerState::gone);
    CHECK(b.engine.workers_total() == 0);

    LeaseRequest r = b.req("echo", 2);
    r.wait = 50ms;
    const Reject j = one<Reject>(b.ask(r));
    CHECK(j.code == FailCode::spawn_failed);
    CHECK_THAT(j.text, Catch::Contains("No such file or directory"));
    CHECK(one<Spawn>(b.after(100ms)).protocol == "echo");
}

TEST_CASE("a LEASE that cannot wait out the back-off fails spawn-failed at once", "[engine][backoff]") {
    Bed b;
    auto l = limits();
    l.queue_timeout = 600000ms;
    b.add("echo", l);
    const Spawn s = one<Spawn>(b.ask(b.req("echo")));
    b.start(s.worker);
    b.exited(s.worker); // back-off until now + 100 ms
    LeaseRequest short_wait = b.req("echo", 2);
    short_wait.wait = 99ms;
    const Reject j = one<Reject>(b.ask(short_wait));
    CHECK(j.code == FailCode::spawn_failed);
    CHECK(j.ticket == short_wait.ticket);
    LeaseRequest long_wait = b.req("echo", 3);
    long_wait.wait = 200ms;
    CHECK(none<Reject>(b.ask(long_wait)));
    CHECK(b.queued("echo") == 2);
}

TEST_CASE("a waiting LEASE whose deadline falls inside a new back-off fails spawn-failed", "[engine][backoff]") {
    Bed b;
    b.add("echo", limits());
    LeaseRequest r = b.req("echo");
    r.wait = 50ms;
    const Spawn s = one<Spawn>(b.ask(r));
    b.start(s.worker);
    b.after(10ms);
    Decisions d = b.exited(s.worker); // back-off until now + 100 ms, after r's deadline
    Reject j;
    if (auto v = all<Reject>(d); !v.empty()) j = v.front();
    else j = one<Reject>(b.after(40ms)); // or, at the latest, at its deadline
    CHECK(j.ticket == r.ticket);
    CHECK((j.code == FailCode::spawn_failed || j.code == FailCode::busy));
    CHECK(b.queued("echo") == 0);
}

// =============================================================================
// per_user pools
// =============================================================================

TEST_CASE("per_user workers serve only their user", "[engine][per_user]") {
    Bed b;
    auto l = limits();
    l.per_user = true;
    l.max_instances_per_user = 1;
    b.add("echo", l);
    auto ws = b.idle_workers("echo", {"alice"});
    CHECK(b.worker(ws[0])->user == "alice");
    const LeaseRequest r = b.req_user("echo", "bob");
    Decisions d = b.ask(r);
    CHECK(none<Grant>(d)); // alice's idle worker is not bob's
    const Spawn s = one<Spawn>(d);
    CHECK(s.user == "bob");
    const Grant g = one<Grant>(b.up(s.worker));
    CHECK(g.worker == s.worker);
    CHECK(b.lease_now(b.req_user("echo", "alice")).worker == ws[0]);
    CHECK(b.worker(s.worker)->user == "bob");
}

TEST_CASE("max_instances_per_user caps one user's workers in a per_user pool", "[engine][per_user]") {
    Bed b;
    auto l = limits();
    l.per_user = true;
    l.max_instances_per_user = 2;
    b.add("echo", l);
    const Grant g1 = b.lease_fresh(b.req_user("echo", "alice"));
    b.lease_fresh(b.req_user("echo", "alice"));
    const LeaseRequest r3 = b.req_user("echo", "alice");
    Decisions d = b.ask(r3);
    CHECK(none<Spawn>(d));
    CHECK(none<Grant>(d));
    CHECK(one<Spawn>(b.ask(b.req_user("echo", "bob"))).user == "bob");
    const Grant g3 = one<Grant>(b.release(g1));
    CHECK(g3.ticket == r3.ticket);
    CHECK(g3.worker == g1.worker);
}

TEST_CASE("a per_user worker that becomes idle serves only a waiting LEASE of its user",
          "[engine][per_user][queue]") {
    Bed b;
    auto l = limits();
    l.per_user = true; // max_instances_per_user = 1
    b.add("echo", l);
    const Grant ga = b.lease_fresh(b.req_user("echo", "alice"));
    const LeaseRequest ra = b.req_user("echo", "alice", 2); // waits for alice's only worker
    CHECK(none<Spawn>(b.ask(ra)));
    b.after(1ms);
    const LeaseRequest rb = b.req_user("echo", "bob", 3);
    const Spawn sb = one<Spawn>(b.ask(rb));
    CHECK(sb.user == "bob");
    // bob's new worker is ready: it serves bob's younger request, not alice's older one.
    CHECK(one<Grant>(b.up(sb.worker)).ticket == rb.ticket);
    CHECK(b.queued("echo") == 1);
    // alice's worker is released: it serves alice.
    const Grant g = one<Grant>(b.release(ga));
    CHECK(g.ticket == ra.ticket);
    CHECK(g.worker == ga.worker);
}

TEST_CASE("in a per_user pool at max_instances the least recently used idle worker of another user is retired",
          "[engine][per_user][caps]") {
    Bed b;
    auto l = limits();
    l.per_user = true;
    l.max_instances = 2;
    b.add("echo", l);
    auto ws = b.idle_workers("echo", {"alice", "bob"}); // alice's is least recently used
    const LeaseRequest r = b.req_user("echo", "carol");
    Decisions d = b.ask(r);
    CHECK(one<Terminate>(d).worker == ws[0]);
    CHECK(none<Spawn>(d));
    CHECK(b.state(ws[1]) == WorkerState::idle);
    const Spawn s = one<Spawn>(b.exited(ws[0]));
    CHECK(s.user == "carol");
    CHECK(one<Grant>(b.up(s.worker)).ticket == r.ticket);
}

TEST_CASE("max_leases_per_user reached fails overloaded", "[engine][limits]") {
    Bed b;
    auto l = limits();
    l.max_leases_per_user = 1;
    b.add("echo", l);
    b.idle_workers("echo", {"x", "y"}); // set-up users, one lease each
    const Grant g = b.lease_now(b.req_user("echo", "alice"));
    Decisions d = b.ask(b.req_user("echo", "alice")); // an idle worker is there
    CHECK(one<Reject>(d).code == FailCode::overloaded);
    CHECK(none<Grant>(d));
    b.lease_now(b.req_user("echo", "bob")); // another user is not limited by alice
    b.release(g);
    b.lease_now(b.req_user("echo", "alice")); // a live lease less: alice may lease again
}

TEST_CASE("max_leases_per_user also caps LEASEs that waited", "[engine][limits][queue]") {
    Bed b;
    auto l = limits();
    l.max_leases_per_user = 1;
    b.add("echo", l);
    const LeaseRequest r1 = b.req_user("echo", "alice", 1);
    const LeaseRequest r2 = b.req_user("echo", "alice", 2);
    Decisions d = b.ask(r1);
    append(d, b.ask(r2));
    for (const Spawn& s : all<Spawn>(d)) append(d, b.up(s.worker));
    // Whatever becomes of r2 (refused, or still waiting), alice never holds two.
    std::size_t alice = 0;
    for (const PoolView& p : b.snap().pools)
        for (const WorkerView& w : p.workers)
            if (w.lease && w.lease->user == "alice") ++alice;
    INFO(describe(d));
    CHECK(alice == 1);
    CHECK(b.engine.live_leases() == 1);
}

// =============================================================================
// Recycle jitter
// =============================================================================

namespace {
std::vector<std::uint64_t> drawn_max_requests(std::uint64_t seed, std::uint64_t max_requests, std::uint32_t pct,
                                              std::uint32_t n) {
    EngineOptions o;
    o.seed = seed;
    Bed b(o);
    auto l = limits();
    l.min_idle = n;
    l.max_requests = max_requests;
    l.recycle_jitter_pct = pct;
    Decisions d = b.add("echo", l);
    for (const Spawn& s : all<Spawn>(d)) b.up(s.worker);
    auto p = b.pool("echo");
    REQUIRE(p);
    auto workers = p->workers;
    std::sort(workers.begin(), workers.end(), [](auto& x, auto& y) { return x.id < y.id; });
    std::vector<std::uint64_t> out;
    for (auto& w : workers) out.push_back(w.max_requests);
    REQUIRE(out.size() == n);
    return out;
}
} // namespace

TEST_CASE("recycle jitter draws max_requests within ±pct and the same seed gives the same draw",
          "[engine][jitter]") {
    const auto a = drawn_max_requests(42, 100, 10, 20);
    for (auto m : a) {
        CHECK(m >= 90);
        CHECK(m <= 110);
    }
    CHECK(std::set<std::uint64_t>(a.begin(), a.end()).size() > 1); // it does spread
    CHECK(drawn_max_requests(42, 100, 10, 20) == a);
    CHECK(drawn_max_requests(43, 100, 10, 20) != a);
}

TEST_CASE("recycle jitter 0 keeps max_requests exact and a draw is at least 1", "[engine][jitter]") {
    for (auto m : drawn_max_requests(7, 100, 0, 5)) CHECK(m == 100);
    for (auto m : drawn_max_requests(7, 1, 100, 20)) {
        CHECK(m >= 1);
        CHECK(m <= 2);
    }
    for (auto m : drawn_max_requests(7, 0, 50, 5)) CHECK(m == 0); // unlimited stays unlimited
}

TEST_CASE("recycle jitter spreads max_lifetime within ±pct", "[engine][jitter]") {
    EngineOptions o;
    o.seed = 3;
    Bed b(o);
    auto l = limits();
    l.max_lifetime = 100s;
    l.recycle_jitter_pct = 10;
    b.add("echo", l);
    const TimePoint t0 = b.t;
    auto ws = b.idle_workers("echo", std::vector<std::string>(10, ""));
    CHECK(none<Terminate>(b.at(t0 + 89s)));
    std::set<TimePoint::rep> when;
    std::size_t retired = 0;
    while (b.t < t0 + 111s) {
        Decisions d = b.after(500ms);
        for (const Terminate& k : all<Terminate>(d)) {
            CHECK(k.pid == b.pid_of[k.worker]);
            ++retired;
            when.insert(b.t.time_since_epoch().count());
        }
    }
    CHECK(retired == ws.size());
    CHECK(when.size() > 1);
}

// =============================================================================
// Shutdown, pool removal and changes
// =============================================================================

TEST_CASE("shutdown fails queued LEASEs shutting-down and end_all ends leases with shutdown", "[engine][shutdown]") {
    Bed b;
    auto l = limits();
    l.max_instances = 1;
    b.add("echo", l);
    const Grant g = b.lease_fresh(b.req("echo", 1));
    const LeaseRequest queued = b.req("echo", 2);
    CHECK(none<Reject>(b.ask(queued)));

    Decisions d = b.shutdown();
    const Reject j = one<Reject>(d);
    CHECK(j.code == FailCode::shutting_down);
    CHECK(j.ticket == queued.ticket);
    CHECK(none<Expire>(d));
    CHECK(b.engine.live_leases() == 1);
    CHECK(b.snap().shutting_down);
    CHECK(one<Reject>(b.ask(b.req("echo", 3))).code == FailCode::shutting_down);

    d = b.end_all();
    const Expire e = one<Expire>(d);
    CHECK(e.reason == EndReason::shutdown);
    CHECK(e.lease == g.lease);
    CHECK(e.client == 1);
    CHECK(terminates(d, g.worker));
    CHECK(b.engine.live_leases() == 0);
    CHECK(b.state(g.worker) == WorkerState::stopping);
}

TEST_CASE("begin_shutdown retires idle and starting workers now and leased ones as their leases end",
          "[engine][shutdown]") {
    Bed b;
    b.add("echo", limits());
    b.add("other", limits());
    auto ws = b.idle_workers("echo", {"", ""});
    const Grant g = b.lease_now(b.req("echo"));
    const Spawn starting = one<Spawn>(b.ask(b.req("other", 2)));
    b.start(starting.worker);

    Decisions d = b.shutdown();
    CHECK(terminates(d, ws[0]));
    CHECK(terminates(d, starting.worker));
    CHECK_FALSE(terminates(d, g.worker));
    CHECK(b.state(g.worker) == WorkerState::leased);
    CHECK(one<Reject>(d).code == FailCode::shutting_down); // other's queued LEASE
    d = b.release(g);
    CHECK(terminates(d, g.worker));
}

TEST_CASE("after begin_shutdown min_idle is no longer kept", "[engine][shutdown][min_idle]") {
    Bed b;
    auto l = limits();
    l.min_idle = 1;
    const Spawn s = one<Spawn>(b.add("echo", l));
    b.up(s.worker);
    CHECK(one<Terminate>(b.shutdown()).worker == s.worker);
    CHECK(none<Spawn>(b.exited(s.worker)));
    CHECK(none<Spawn>(b.after(10s)));
    CHECK(b.engine.workers_total() == 0);
    Decisions d;
    CHECK(b.engine.add_pool(b.t, "late", limits(), d) == PoolChange::shutting_down);
}

TEST_CASE("remove_pool drains: queued fail, idle retire, leased retire at release", "[engine][pools]") {
    Bed b;
    auto l = limits();
    l.max_instances = 2;
    b.add("echo", l);
    SECTION("idle workers retire now") {
        auto ws = b.idle_workers("echo", {"", ""});
        Decisions d = b.remove("echo");
        CHECK(terminates(d, ws[0]));
        CHECK(terminates(d, ws[1]));
        CHECK(b.pool("echo")->draining);
        b.exited(ws[0]);
        b.exited(ws[1]);
        CHECK_FALSE(b.pool("echo").has_value()); // gone with its last worker
    }
    SECTION("queued LEASEs fail, leased workers retire as their leases end") {
        const Grant g1 = b.lease_fresh(b.req("echo", 1));
        const Grant g2 = b.lease_fresh(b.req("echo", 2));
        const LeaseRequest r = b.req("echo", 3);
        CHECK(none<Reject>(b.ask(r)));
        Decisions d = b.remove("echo");
        const Reject j = one<Reject>(d);
        CHECK(j.code == FailCode::unknown_protocol);
        CHECK(j.ticket == r.ticket);
        CHECK(none<Terminate>(d));
        CHECK(none<Expire>(d));
        CHECK(b.engine.live_leases() == 2);
        CHECK(one<Reject>(b.ask(b.req("echo", 4))).code == FailCode::unknown_protocol);
        d = b.release(g1);
        CHECK(one<Terminate>(d).worker == g1.worker);
        CHECK(b.engine.renew(b.t, g2.lease, 2, uid_a)); // a live lease is not cut short
        b.exited(g1.worker);
        CHECK(b.pool("echo").has_value());
        d = b.release(g2);
        CHECK(one<Terminate>(d).worker == g2.worker);
        b.exited(g2.worker);
        CHECK_FALSE(b.pool("echo").has_value());
    }
}

TEST_CASE("pools are added once and only known pools are changed or removed", "[engine][pools]") {
    Bed b;
    b.add("echo", limits());
    Decisions d;
    CHECK(b.engine.add_pool(b.t, "echo", limits(), d) == PoolChange::exists);
    CHECK(b.engine.update_pool(b.t, "nope", limits(), false, d) == PoolChange::unknown);
    CHECK(b.engine.remove_pool(b.t, "nope", d) == PoolChange::unknown);
    CHECK(d.empty());
    CHECK(b.snap().pools.size() == 1);
}

TEST_CASE("update_pool with restart_workers retires idle workers now and leased ones when their lease ends",
          "[engine][pools]") {
    Bed b;
    b.add("echo", limits());
    auto ws = b.idle_workers("echo", {"", ""});
    const Grant g = b.lease_now(b.req("echo")); // ws[1]
    REQUIRE(g.worker == ws[1]);
    Decisions d;
    REQUIRE(b.engine.update_pool(b.t, "echo", limits(), true, d) == PoolChange::ok);
    CHECK(terminates(d, ws[0]));
    CHECK_FALSE(terminates(d, ws[1]));
    CHECK(b.engine.live_leases() == 1);
    d = b.release(g);
    CHECK(terminates(d, ws[1]));
    // New LEASEs get new workers.
    d = b.ask(b.req("echo"));
    CHECK(none<Grant>(d));
    CHECK(all<Spawn>(d).size() == 1);
}

// =============================================================================
// Spawn bookkeeping and views
// =============================================================================

TEST_CASE("worker_by_pid finds a started worker until it exits", "[engine][workers]") {
    Bed b;
    b.add("echo", limits());
    const Spawn s = one<Spawn>(b.ask(b.req("echo")));
    CHECK_FALSE(b.engine.worker_by_pid(b.last_pid + 1).has_value());
    b.start(s.worker);
    const int pid = b.pid_of[s.worker];
    CHECK(b.engine.worker_by_pid(pid) == std::optional<WorkerId>(s.worker));
    CHECK_FALSE(b.engine.worker_by_pid(pid + 12345).has_value());
    b.exited(s.worker);
    CHECK_FALSE(b.engine.worker_by_pid(pid).has_value());
}

TEST_CASE("Terminate for a worker whose spawn is not yet reported is sent once it is", "[engine][workers]") {
    Bed b;
    b.add("echo", limits());
    const Spawn s = one<Spawn>(b.ask(b.req("echo")));
    REQUIRE(b.worker(s.worker)->pid == 0);
    Decisions d = b.shutdown();
    for (const Terminate& k : all<Terminate>(d)) CHECK(k.pid != 0); // never a signal to pid 0
    CHECK_FALSE(terminates(d, s.worker));
    d = b.start(s.worker);
    const Terminate k = one<Terminate>(d);
    CHECK(k.worker == s.worker);
    CHECK(k.pid == b.pid_of[s.worker]);
}

TEST_CASE("workers_total counts every pool's workers, stopping ones included, until they exit",
          "[engine][workers]") {
    Bed b;
    auto l = limits();
    l.max_idletime = 1s;
    b.add("a", l);
    b.add("b", limits());
    auto wa = b.idle_workers("a", {""});
    b.idle_workers("b", {"", ""});
    CHECK(b.engine.workers_total() == 3);
    CHECK(one<Terminate>(b.after(1s)).worker == wa[0]);
    CHECK(b.engine.workers_total() == 3);
    CHECK(b.snap().workers_total == 3);
    b.exited(wa[0]);
    CHECK(b.engine.workers_total() == 2);
}

TEST_CASE("next_deadline is the earliest pending deadline", "[engine][time]") {
    Bed b;
    CHECK_FALSE(b.engine.next_deadline().has_value());
    auto l = limits();
    l.lease_ttl = 1000ms;
    b.add("echo", l);
    CHECK_FALSE(b.engine.next_deadline().has_value()); // no worker, no lease: nothing to time
    const Grant g = b.lease_fresh(b.req("echo"));
    REQUIRE(b.engine.next_deadline().has_value());
    CHECK(*b.engine.next_deadline() == b.t + 1000ms);
    b.release(g);
    CHECK_FALSE(b.engine.next_deadline().has_value());
}

TEST_CASE("snapshot shows states, requests, users and queue lengths", "[engine][snapshot]") {
    EngineOptions o;
    o.max_workers = 7;
    Bed b(o);
    auto l = limits();
    l.max_instances = 3;
    l.max_requests = 50;
    b.add("echo", l);
    auto ws = b.idle_workers("echo", {"alice", "bob"});
    LeaseRequest r = b.req_user("echo", "alice", 1);
    r.ttl = 2000ms;
    const Grant g = b.lease_now(r);
    REQUIRE(g.worker == ws[0]);
    b.engine.worker_status(ws[1], "serving nobody");

    Snapshot s = b.snap();
    CHECK(s.workers_total == 2);
    CHECK(s.max_workers == 7);
    CHECK_FALSE(s.shutting_down);
    REQUIRE(s.pools.size() == 1);
    const PoolView& p = s.pools[0];
    CHECK(p.protocol == "echo");
    CHECK(p.limits == l);
    CHECK_FALSE(p.draining);
    CHECK(p.queued == 0);
    CHECK(p.leases_granted == 3);
    CHECK(p.spawn_failures == 0);
    REQUIRE(p.workers.size() == 2);

    auto w0 = b.worker(ws[0]);
    REQUIRE(w0);
    CHECK(w0->state == WorkerState::leased);
    CHECK(w0->pid == b.pid_of[ws[0]]);
    CHECK(w0->requests == 2);
    CHECK(w0->max_requests == 50);
    CHECK(w0->user == "alice");
    REQUIRE(w0->lease);
    CHECK(w0->lease->id == g.lease);
    CHECK(w0->lease->client == 1);
    CHECK(w0->lease->uid == uid_a);
    CHECK_FALSE(w0->lease->detached);
    CHECK(w0->lease->user == "alice");
    CHECK(w0->lease->ttl == 2000ms);
    CHECK(w0->lease->granted_at == b.t);
    CHECK(w0->lease->expires_at == b.t + 2000ms);

    auto w1 = b.worker(ws[1]);
    REQUIRE(w1);
    CHECK(w1->state == WorkerState::idle);
    CHECK(w1->requests == 1);
    CHECK(w1->user == "bob");
    CHECK(w1->status == "serving nobody");
    CHECK_FALSE(w1->lease);

    // Two more leases fill the pool; two LEASEs then wait.
    b.lease_now(b.req("echo", 2));
    b.lease_fresh(b.req("echo", 3));
    b.ask(b.req("echo", 4));
    b.ask(b.req("echo", 5));
    CHECK(b.queued("echo") == 2);
    CHECK(b.pool("echo")->leases_granted == 5);

    // A spawned worker is starting with pid 0 until its spawn is reported.
    b.add("other", limits());
    const Spawn sp = one<Spawn>(b.ask(b.req("other", 6)));
    auto w2 = b.worker(sp.worker);
    REQUIRE(w2);
    CHECK(w2->state == WorkerState::starting);
    CHECK(w2->pid == 0);
    CHECK(w2->requests == 0);
    CHECK(b.snap().workers_total == 4);

    b.shutdown();
    CHECK(b.snap().shutting_down);
}
