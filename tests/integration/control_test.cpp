// The control protocol end to end: a real broker (in-process, on its control
// socket), real workers, and the client library (client::Connection); a raw
// socket where the client library would refuse to send what is under test.
// One TEST_CASE per line of PROTOCOL.md's "Control protocol" and the choices
// docs/protocol.md makes where it is silent.

#include "broker_harness.hpp"
#include "raw_control.hpp"
#include "client/connection.hpp"

#include <catch2/catch.hpp>

#include <boost/json.hpp>

#include <csignal>
#include <fstream>
#include <cstring>
#include <poll.h>
#include <set>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

using namespace foreman;
using namespace foreman::test;
using client::Connection;
using client::Error;
using client::LeaseOptions;
using lease::WorkerState;
using protocol::EndReason;
using protocol::FailCode;
using Clock = std::chrono::steady_clock;

namespace {

namespace json = boost::json;


std::chrono::milliseconds since(Clock::time_point t0) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0);
}

/// A control connection without the client library: exact bytes out, lines in.
class RawSocket {
public:
    explicit RawSocket(const std::string& path) {
        fd_ = spawn::unique_fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
        REQUIRE(fd_.get() >= 0);
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
        REQUIRE(::connect(fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    }

    /// Sends all of `bytes`; false when the broker closed first.
    bool send(const std::string& bytes) {
        std::size_t done = 0;
        while (done < bytes.size()) {
            ssize_t n = ::send(fd_.get(), bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) return false;
            done += static_cast<std::size_t>(n);
        }
        return true;
    }

    /// The next line without its '\n'; nullopt at end of file or after `timeout`.
    std::optional<std::string> line(std::chrono::milliseconds timeout = 5s) {
        auto deadline = Clock::now() + timeout;
        for (;;) {
            auto nl = in_.find('\n');
            if (nl != std::string::npos) {
                std::string l = in_.substr(0, nl);
                in_.erase(0, nl + 1);
                return l;
            }
            if (!fill(deadline)) return std::nullopt;
        }
    }

    /// Whether the broker closes the connection (within `timeout`) with
    /// nothing more to say.
    bool closed_by_broker(std::chrono::milliseconds timeout = 5s) {
        auto deadline = Clock::now() + timeout;
        while (fill(deadline)) {}
        return eof_ && in_.empty();
    }

private:
    /// Reads what arrives before `deadline`; false at EOF, error or timeout.
    bool fill(Clock::time_point deadline) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
        pollfd p{fd_.get(), POLLIN, 0};
        if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) != 1) return false;
        char buf[4096];
        ssize_t n = ::read(fd_.get(), buf, sizeof buf);
        if (n <= 0) {
            eof_ = true; // end of file, or a reset after the broker's close
            return false;
        }
        in_.append(buf, static_cast<std::size_t>(n));
        return true;
    }

    spawn::unique_fd fd_;
    std::string in_;
    bool eof_ = false;
};

// LEASE keys (GCC 12 warns about designated initializers that leave members out).
LeaseOptions wait_ms(std::uint64_t ms) {
    LeaseOptions o;
    o.wait_ms = ms;
    return o;
}
LeaseOptions ttl_ms(std::uint64_t ms) {
    LeaseOptions o;
    o.ttl_ms = ms;
    return o;
}
LeaseOptions version(std::uint64_t v) {
    LeaseOptions o;
    o.version = v;
    return o;
}
LeaseOptions detached() {
    LeaseOptions o;
    o.detach = true;
    return o;
}
LeaseOptions as_user(const std::string& user) {
    LeaseOptions o;
    o.user = user;
    return o;
}

/// Matches a client::Error that is a FAIL with `code`.
class IsFail : public Catch::MatcherBase<Error> {
public:
    explicit IsFail(FailCode code) : code_(code) {}
    bool match(const Error& e) const override { return e.is(code_); }
    std::string describe() const override { return "is FAIL " + std::string(protocol::to_string(code_)); }

private:
    FailCode code_;
};

/// Reads until EXPIRED for `lease_id` arrives (others are dropped).
std::optional<client::Expired> wait_expired(Connection& c, std::uint64_t lease_id,
                                            std::chrono::milliseconds timeout = 10s) {
    auto deadline = Clock::now() + timeout;
    for (;;) {
        for (auto& e : c.take_expired())
            if (e.lease_id == lease_id) return e;
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
        if (left.count() <= 0) return std::nullopt;
        c.poll(left);
    }
}

/// Asks a `worker pid` worker who it is.
int worker_pid_behind(int fd) {
    REQUIRE(::write(fd, "?\n", 2) == 2);
    std::string answer;
    char c;
    while (answer.find('\n') == std::string::npos && ::read(fd, &c, 1) == 1) answer.push_back(c);
    REQUIRE(answer.rfind("pid ", 0) == 0);
    return std::atoi(answer.c_str() + 4);
}

std::int64_t num(const json::value& v) { return v.is_uint64() ? static_cast<std::int64_t>(v.as_uint64()) : v.as_int64(); }

const json::object* pool_of(const json::value& status, const std::string& protocol) {
    for (auto& p : status.at("pools").as_array())
        if (p.at("protocol").as_string() == protocol.c_str()) return &p.as_object();
    return nullptr;
}

const json::object* worker_with_pid(const json::object& pool, int pid) {
    for (auto& w : pool.at("workers").as_array())
        if (num(w.at("pid")) == pid) return &w.as_object();
    return nullptr;
}

std::optional<lease::WorkerView> snapshot_worker(const lease::Snapshot& s, int pid) {
    for (auto& w : all_workers(s))
        if (w.pid == pid) return w;
    return std::nullopt;
}

bool worker_in_state(const lease::Snapshot& s, int pid, WorkerState state) {
    auto w = snapshot_worker(s, pid);
    return w && w->state == state;
}

} // namespace

// ---- handshake -----------------------------------------------------------------------

TEST_CASE("the broker's VERSION line arrives before the client sends anything", "[control][handshake]") {
    BrokerHarness h("[pool.echo]\npath = " + echo_worker() + "\n");
    RawSocket s(control_socket(h));
    CHECK(s.line() == version_line);
}

TEST_CASE("a client whose first line has another version gets FAIL version and is closed", "[control][handshake]") {
    BrokerHarness h("[pool.echo]\npath = " + echo_worker() + "\n");
    RawSocket s(control_socket(h));
    REQUIRE(s.send("VERSION\tforeman\t999\n"));
    CHECK(s.line() == version_line);
    CHECK(s.line() == "FAIL\t*\tversion\tsupported: 1000");
    CHECK(s.closed_by_broker());
}

TEST_CASE("a client whose first line is not VERSION gets FAIL version and is closed", "[control][handshake]") {
    BrokerHarness h("[pool.echo]\npath = " + echo_worker() + "\n");
    RawSocket s(control_socket(h));
    REQUIRE(s.send("STATUS\tt1\n"));
    CHECK(s.line() == version_line);
    CHECK(s.line() == "FAIL\t*\tversion\tsupported: 1000");
    CHECK(s.closed_by_broker());
}

TEST_CASE("the client library completes the handshake and learns the broker's version", "[control][handshake]") {
    BrokerHarness h("[pool.echo]\npath = " + echo_worker() + "\n");
    auto c = Connection::connect(control_socket(h));
    CHECK(c.broker_version() == 1000);
}

TEST_CASE("a line longer than 65536 bytes gets FAIL bad-request line too long and the connection closes",
          "[control][bad-request]") {
    BrokerHarness h("[pool.echo]\npath = " + echo_worker() + "\n");
    RawSocket s(control_socket(h));
    REQUIRE(s.send(version_line + "\n"));
    REQUIRE(s.line() == version_line);
    s.send("STATUS\t" + std::string(70000, 'x') + "\n"); // the broker may close before it has all of it
    CHECK(s.line() == "FAIL\t*\tbad-request\tline too long");
    CHECK(s.closed_by_broker());
}

TEST_CASE("a line of exactly 65536 bytes is read as a request", "[control][bad-request]") {
    BrokerHarness h("[pool.echo]\npath = " + echo_worker() + "\n");
    RawSocket s(control_socket(h));
    REQUIRE(s.send(version_line + "\n"));
    REQUIRE(s.line() == version_line);
    std::string line = "LEASE\tt1\techo\tuser=";
    line += std::string(65536 - line.size(), 'u');
    REQUIRE(line.size() == 65536);
    REQUIRE(s.send(line + "\nSTATUS\tt2\n"));
    // Replies come in the order they complete (the LEASE may wait for its
    // worker to start): both answered, LEASE t1 read as a LEASE.
    std::set<std::string> tags;
    for (int i = 0; i < 2; ++i) {
        auto reply = s.line();
        REQUIRE(reply.has_value());
        INFO(reply->substr(0, 200));
        CHECK(reply->rfind("OK\t", 0) == 0);
        tags.insert(reply->substr(3, 2));
    }
    CHECK(tags == std::set<std::string>{"t1", "t2"});
}

// ---- FAIL codes ----------------------------------------------------------------------

TEST_CASE("malformed requests fail bad-request, tag * when no valid tag is read, and the connection stays open",
          "[control][bad-request]") {
    BrokerHarness h("[pool.echo]\npath = " + echo_worker() + "\nlease_ttl_ms = 1000\n");
    RawSocket s(control_socket(h));
    REQUIRE(s.send(version_line + "\n"));
    REQUIRE(s.line() == version_line);

    auto next_fail = [&](const std::string& request, const std::string& tag) {
        REQUIRE(s.send(request + "\n"));
        auto reply = s.line();
        REQUIRE(reply.has_value());
        INFO(request << " -> " << *reply);
        CHECK(reply->rfind("FAIL\t" + tag + "\tbad-request\t", 0) == 0);
    };
    next_fail("FROB\tu1", "u1");                              // unknown command
    next_fail("LEASE\tu2\techo\tcolour=red", "u2");           // unknown LEASE key
    next_fail("LEASE\tu3\techo\twait_ms=1\twait_ms=2", "u3"); // a key twice
    next_fail("LEASE\tu4\techo\twait_ms=-1", "u4");           // not a plain decimal
    next_fail("LEASE\tu5\techo\tdetach=yes", "u5");
    next_fail("LEASE\tu6\techo\tttl_ms=50", "u6");            // below 100
    next_fail("LEASE\tu7\techo\tttl_ms=1001", "u7");          // above the pool's lease_ttl_ms
    next_fail("RELEASE\tu8\tnot-a-number", "u8");
    next_fail("LEASE\tbad tag!\techo", "*");                  // bad tag
    next_fail("LEASE\t" + std::string(65, 't') + "\techo", "*"); // a tag of 65 bytes
    next_fail("LEASE", "*");                                   // no tag at all
    next_fail("", "*");

    REQUIRE(s.send("STATUS\tu9\n"));
    auto status = s.line();
    REQUIRE(status.has_value());
    CHECK(status->rfind("OK\tu9\t{", 0) == 0); // still open
}

TEST_CASE("a tag still in flight on the same connection fails bad-request duplicate tag", "[control][bad-request]") {
    BrokerHarness h("[pool.one]\npath = " + echo_worker() + "\nmax_instances = 1\n");
    auto holder = Connection::connect(control_socket(h));
    auto held = holder.lease("one");
    RawSocket s(control_socket(h));
    REQUIRE(s.send(version_line + "\n"));
    REQUIRE(s.line() == version_line);
    REQUIRE(s.send("LEASE\tdup\tone\twait_ms=5000\nLEASE\tdup\tone\twait_ms=0\n"));
    CHECK(s.line() == "FAIL\tdup\tbad-request\tduplicate tag");
    held.release(); // the first LEASE dup is still waiting: now it is granted
    auto granted = s.line();
    REQUIRE(granted.has_value());
    CHECK(granted->rfind("OK\tdup\t", 0) == 0);
}

TEST_CASE("a LEASE with a ttl_ms outside 100..lease_ttl_ms fails bad-request through the client",
          "[control][bad-request]") {
    BrokerHarness h("[pool.echo]\npath = " + echo_worker() + "\nlease_ttl_ms = 1000\n");
    auto c = Connection::connect(control_socket(h));
    CHECK_THROWS_MATCHES(c.lease("echo", ttl_ms(99)), Error, IsFail(FailCode::bad_request));
    CHECK_THROWS_MATCHES(c.lease("echo", ttl_ms(1001)), Error, IsFail(FailCode::bad_request));
    auto l = c.lease("echo", ttl_ms(100));
    CHECK(l.ttl() == 100ms);
}

TEST_CASE("a LEASE of a version the pool does not serve fails version", "[control][version]") {
    BrokerHarness h("[pool.echo]\npath = " + echo_worker() + "\n");
    auto c = Connection::connect(control_socket(h));
    CHECK_THROWS_MATCHES(c.lease("echo", version(999)), Error, IsFail(FailCode::version));
    CHECK_THROWS_MATCHES(c.lease("echo", version(1001)), Error, IsFail(FailCode::version));
    auto l = c.lease("echo", version(1000));
    CHECK(l.worker_pid() > 0);
}

TEST_CASE("a LEASE of a protocol no pool serves fails unknown-protocol", "[control][unknown-protocol]") {
    BrokerHarness h("[pool.echo]\npath = " + echo_worker() + "\n");
    auto c = Connection::connect(control_socket(h));
    CHECK_THROWS_MATCHES(c.lease("nosuch"), Error, IsFail(FailCode::unknown_protocol));
}

TEST_CASE("a LEASE with wait_ms=0 fails busy at once when the only worker is leased", "[control][busy]") {
    BrokerHarness h("[pool.one]\npath = " + echo_worker() + "\nmax_instances = 1\nqueue_timeout_ms = 5000\n");
    auto c = Connection::connect(control_socket(h));
    auto held = c.lease("one");
    auto t0 = Clock::now();
    CHECK_THROWS_MATCHES(c.lease("one", wait_ms(0)), Error, IsFail(FailCode::busy));
    CHECK(since(t0) < 500ms * sanitizer_slowdown); // at once, not after queue_timeout_ms
}

TEST_CASE("a waiting LEASE that no worker serves within its wait_ms fails busy", "[control][busy]") {
    BrokerHarness h("[pool.one]\npath = " + echo_worker() + "\nmax_instances = 1\n");
    auto c = Connection::connect(control_socket(h));
    auto held = c.lease("one");
    auto t0 = Clock::now();
    CHECK_THROWS_MATCHES(c.lease("one", wait_ms(300)), Error, IsFail(FailCode::busy));
    auto took = since(t0);
    CHECK(took >= 300ms);
    CHECK(took < 300ms + 1s * sanitizer_slowdown);
}

TEST_CASE("a LEASE without wait_ms waits the pool's queue_timeout_ms, then fails busy", "[control][busy]") {
    BrokerHarness h("[pool.one]\npath = " + echo_worker() + "\nmax_instances = 1\nqueue_timeout_ms = 250\n");
    auto c = Connection::connect(control_socket(h));
    auto held = c.lease("one");
    auto t0 = Clock::now();
    CHECK_THROWS_MATCHES(c.lease("one"), Error, IsFail(FailCode::busy));
    auto took = since(t0);
    CHECK(took >= 250ms);
    CHECK(took < 250ms + 1s * sanitizer_slowdown);
}

TEST_CASE("a LEASE beyond max_queue waiting ones fails overloaded", "[control][overloaded]") {
    BrokerHarness h("[pool.one]\npath = " + echo_worker() + "\nmax_instances = 1\nmax_queue = 1\n");
    auto c = Connection::connect(control_socket(h));
    auto held = c.lease("one");
    auto waiting = c.send_lease("one", wait_ms(10000));
    REQUIRE(h.wait_for([](auto& s) { return s.pools.at(0).queued == 1; }));
    CHECK_THROWS_MATCHES(c.lease("one", wait_ms(10000)), Error, IsFail(FailCode::overloaded));
    int pid = held.worker_pid();
    held.release();
    auto next = c.wait_lease(waiting); // the one in the queue is still served
    CHECK(next.worker_pid() == pid);
}

TEST_CASE("a LEASE beyond max_leases_per_user of its user fails overloaded", "[control][overloaded]") {
    BrokerHarness h("[pool.echo]\npath = " + echo_worker() + "\nmax_leases_per_user = 1\n");
    auto c = Connection::connect(control_socket(h));
    auto alice = c.lease("echo", as_user("alice"));
    CHECK_THROWS_MATCHES(c.lease("echo", as_user("alice")), Error, IsFail(FailCode::overloaded));
    auto bob = c.lease("echo", as_user("bob"));
    CHECK(bob.worker_pid() != alice.worker_pid());
}

TEST_CASE("waiting LEASEs are served first come, first served", "[control][queue]") {
    BrokerHarness h("[pool.one]\npath = " + echo_worker() + "\nmax_instances = 1\n");
    auto holder = Connection::connect(control_socket(h));
    auto held = holder.lease("one");
    auto first = Connection::connect(control_socket(h));
    auto second = Connection::connect(control_socket(h));
    auto first_tag = first.send_lease("one", wait_ms(10000));
    REQUIRE(h.wait_for([](auto& s) { return s.pools.at(0).queued == 1; }));
    auto second_tag = second.send_lease("one", wait_ms(10000));
    REQUIRE(h.wait_for([](auto& s) { return s.pools.at(0).queued == 2; }));
    held.release();
    auto a = first.wait_lease(first_tag);
    CHECK(a.worker_pid() == held.worker_pid());
    CHECK(h.snapshot().pools.at(0).queued == 1); // the second still waits
    a.release();
    auto b = second.wait_lease(second_tag);
    CHECK(b.worker_pid() == held.worker_pid());
    CHECK(b.id() > a.id());
}

TEST_CASE("beyond max_clients a connection gets VERSION, then FAIL overloaded, and is closed", "[control][overloaded]") {
    BrokerHarness h("max_clients = 2\n[pool.echo]\npath = " + echo_worker() + "\n");
    auto c1 = Connection::connect(control_socket(h));
    auto c2 = Connection::connect(control_socket(h));
    RawSocket third(control_socket(h));
    CHECK(third.line() == version_line);
    auto fail = third.line();
    REQUIRE(fail.has_value());
    CHECK(fail->rfind("FAIL\t*\toverloaded\t", 0) == 0);
    CHECK(third.closed_by_broker());
    CHECK_THROWS_MATCHES(Connection::connect(control_socket(h)), Error, IsFail(FailCode::overloaded));
    // The two within the cap still work.
    CHECK(num(c1.status().at("version")) == 1000);
    CHECK(num(c2.status().at("version")) == 1000);
}

TEST_CASE("a LEASE from a pool whose workers crash at start fails spawn-failed", "[control][spawn-failed]") {
    BrokerHarness h("[pool.crash]\npath = {self}\nargs = worker crash-at-start\nnotify = foreman\n");
    auto c = Connection::connect(control_socket(h));
    // The first LEASE starts a worker that dies: its wait runs out (busy) or
    // the back-off outlasts it (spawn-failed).
    try {
        c.lease("crash", wait_ms(50));
        FAIL("a worker that crashes at start was leased");
    } catch (const Error& e) {
        CHECK((e.is(FailCode::spawn_failed) || e.is(FailCode::busy)));
    }
    REQUIRE(h.wait_for([](auto& s) { return s.pools.at(0).spawn_failures >= 1; }));
    auto t0 = Clock::now();
    try {
        c.lease("crash", wait_ms(10));
        FAIL("a worker that crashes at start was leased");
    } catch (const Error& e) {
        CHECK(e.is(FailCode::spawn_failed));
    }
    CHECK(since(t0) < 500ms * sanitizer_slowdown);
    auto status = c.status();
    CHECK(num(pool_of(status, "crash")->at("spawn_failures")) >= 1);
}

TEST_CASE("RENEW and RELEASE of a lease that does not exist fail no-such-lease", "[control][no-such-lease]") {
    BrokerHarness h("[pool.echo]\npath = " + echo_worker() + "\n");
    auto c = Connection::connect(control_socket(h));
    CHECK_THROWS_MATCHES(c.renew(123456), Error, IsFail(FailCode::no_such_lease));
    CHECK_THROWS_MATCHES(c.release(123456), Error, IsFail(FailCode::no_such_lease));
    // A lease that has ended is no lease either.
    auto l = c.lease("echo");
    auto id = l.id();
    l.release();
    CHECK_THROWS_MATCHES(c.renew(id), Error, IsFail(FailCode::no_such_lease));
    CHECK_THROWS_MATCHES(c.release(id), Error, IsFail(FailCode::no_such_lease));
}

TEST_CASE("a LEASE by a peer that allow_users does not list fails denied", "[control][denied]") {
    std::string me = std::to_string(::getuid());
    BrokerHarness h("[pool.theirs]\npath = " + echo_worker() + "\nallow_users = nobody\n" +
                    "[pool.mine]\npath = " + echo_worker() + "\nallow_users = nobody," + me + "\n");
    auto c = Connection::connect(control_socket(h));
    CHECK_THROWS_MATCHES(c.lease("theirs"), Error, IsFail(FailCode::denied));
    auto l = c.lease("mine");
    CHECK(l.worker_pid() > 0);
}

TEST_CASE("a pool that lists a user lets that user lease and denies root", "[control][denied][root]") {
    if (::geteuid() != 0) {
        WARN("not root: cannot connect as another uid");
        return;
    }
    OpenDir open;
    BrokerHarness h(open.ini() + "[pool.theirs]\npath = " + echo_worker() + "\nallow_users = nobody\n");
    auto lines = run_raw_client(nobody_uid, open.socket(), {"LEASE\tn1\ttheirs"});
    REQUIRE(lines.size() == 1);
    CHECK(lines[0].rfind("OK\tn1\t", 0) == 0);
    auto c = Connection::connect(open.socket());
    CHECK_THROWS_MATCHES(c.lease("theirs"), Error, IsFail(FailCode::denied));
    // allow_users is about the peer (SO_PEERCRED), not what the LEASE says.
    CHECK_THROWS_MATCHES(c.lease("theirs", as_user("nobody")), Error, IsFail(FailCode::denied));
    CHECK_THROWS_MATCHES(c.lease("theirs", as_user("65534")), Error, IsFail(FailCode::denied));
}

TEST_CASE("REGISTER and UNREGISTER by a uid that is neither root nor the broker's fail denied",
          "[control][denied][root]") {
    if (::geteuid() != 0) {
        WARN("not root: cannot connect as another uid");
        return;
    }
    OpenDir open;
    BrokerHarness h(open.ini() + "[pool.echo]\npath = " + echo_worker() + "\n");
    auto lines = run_raw_client(nobody_uid, open.socket(),
                                {"REGISTER\tg1\tnew\tpath=" + echo_worker(), "UNREGISTER\tg2\techo", "STATUS\tg3"});
    REQUIRE(lines.size() == 3);
    CHECK(lines[0].rfind("FAIL\tg1\tdenied\t", 0) == 0);
    CHECK(lines[1].rfind("FAIL\tg2\tdenied\t", 0) == 0);
    CHECK(lines[2].rfind("OK\tg3\t", 0) == 0); // the connection itself was fine
    auto s = h.snapshot();
    REQUIRE(s.pools.size() == 1);
    CHECK(s.pools[0].protocol == "echo");
    CHECK_FALSE(s.pools[0].draining);
}

TEST_CASE("REGISTER of a pool that exists fails exists", "[control][exists]") {
    BrokerHarness h("[pool.echo]\npath = " + echo_worker() + "\n");
    auto c = Connection::connect(control_socket(h));
    CHECK_THROWS_MATCHES(c.register_pool("echo", {{"path", echo_worker()}}), Error, IsFail(FailCode::exists));
    c.register_pool("reg", {{"path", echo_worker()}});
    CHECK_THROWS_MATCHES(c.register_pool("reg", {{"path", echo_worker()}}), Error, IsFail(FailCode::exists));
}

TEST_CASE("a LEASE after stop began, and one waiting at stop, fail shutting-down", "[control][shutting-down]") {
    BrokerHarness h("shutdown_grace_ms = 10000\n[pool.one]\npath = " + echo_worker() + "\nmax_instances = 1\n");
    auto holder = Connection::connect(control_socket(h));
    auto held = holder.lease("one");
    auto waiter = Connection::connect(control_socket(h));
    auto waiting = waiter.send_lease("one", wait_ms(10000));
    REQUIRE(h.wait_for([](auto& s) { return s.pools.at(0).queued == 1; }));

    h.broker().stop(); // the held lease keeps the broker in its grace period
    auto queued = waiter.wait(waiting);
    REQUIRE(queued.reply.kind == protocol::Reply::Kind::fail);
    CHECK(queued.reply.code == FailCode::shutting_down);
    REQUIRE(h.wait_for([](auto& s) { return s.shutting_down; }));

    CHECK_THROWS_MATCHES(waiter.lease("one", wait_ms(0)), Error, IsFail(FailCode::shutting_down));
    auto late = Connection::connect(control_socket(h));
    CHECK_THROWS_MATCHES(late.lease("one"), Error, IsFail(FailCode::shutting_down));
    CHECK(late.status().at("shutting_down").as_bool());
    CHECK_NOTHROW(held.release()); // the last lease ends: the broker stops
}

TEST_CASE("a lease still held when the shutdown grace ends gets EXPIRED shutdown", "[control][expired]") {
    BrokerHarness h("shutdown_grace_ms = 300\n[pool.echo]\npath = " + echo_worker() + "\n");
    auto c = Connection::connect(control_socket(h));
    auto l = c.lease("echo");
    auto t0 = Clock::now();
    h.broker().stop();
    auto e = wait_expired(c, l.id());
    REQUIRE(e.has_value());
    CHECK(e->reason == EndReason::shutdown);
    CHECK(since(t0) >= 300ms);
    l.forget();
}

// ---- pipelining ----------------------------------------------------------------------

TEST_CASE("a waiting LEASE does not hold back a RELEASE sent after it", "[control][pipelining]") {
    BrokerHarness h("[pool.one]\npath = " + echo_worker() + "\nmax_instances = 1\n");
    auto c = Connection::connect(control_socket(h));
    auto held = c.lease("one");
    int pid = held.worker_pid();
    held.forget(); // released by hand below, pipelined

    auto t0 = Clock::now();
    auto lease_tag = c.send_lease("one", wait_ms(5000));
    protocol::Request release{};
    release.verb = protocol::Verb::release;
    release.lease_id = held.id();
    auto release_tag = c.send(release);

    // Held back behind the LEASE, the RELEASE could only be answered after
    // the LEASE gave up (busy, 5 s): the worker it frees is the LEASE's.
    auto released = c.wait(release_tag);
    CHECK(released.reply.kind == protocol::Reply::Kind::ok);
    CHECK(since(t0) < 1s * sanitizer_slowdown);
    auto next = c.wait_lease(lease_tag);
    CHECK(next.worker_pid() == pid);
    CHECK(next.id() > held.id());
    CHECK(since(t0) < 1s * sanitizer_slowdown);
}

TEST_CASE("replies to pipelined requests come back in the order they complete", "[control][pipelining]") {
    BrokerHarness h("[pool.one]\npath = " + echo_worker() + "\nmax_instances = 1\n");
    auto holder = Connection::connect(control_socket(h));
    auto held = holder.lease("one");
    RawSocket s(control_socket(h));
    REQUIRE(s.send(version_line + "\n"));
    REQUIRE(s.line() == version_line);
    REQUIRE(s.send("LEASE\tslow\tone\twait_ms=5000\nSTATUS\tfast\nRENEW\tfast2\t999999\n"));
    auto first = s.line();
    auto second = s.line();
    REQUIRE(first.has_value());
    REQUIRE(second.has_value());
    CHECK(first->rfind("OK\tfast\t", 0) == 0);
    CHECK(second->rfind("FAIL\tfast2\tno-such-lease\t", 0) == 0);
    held.release();
    auto third = s.line();
    REQUIRE(third.has_value());
    CHECK(third->rfind("OK\tslow\t", 0) == 0);
}

TEST_CASE("descriptors arrive in the order of the LEASE OK lines when several LEASEs are pipelined",
          "[control][pipelining]") {
    BrokerHarness h("[pool.pid]\npath = {self}\nargs = worker pid\nmin_idle = 3\nmax_instances = 3\n");
    REQUIRE(h.wait_for([](auto& s) { return count_state(s, "pid", WorkerState::idle) == 3; }));
    auto c = Connection::connect(control_socket(h));
    std::vector<std::string> tags;
    for (int i = 0; i < 3; ++i) tags.push_back(c.send_lease("pid", wait_ms(5000)));
    // Waited for last first: pairing must not depend on which reply is asked for.
    std::vector<client::Lease> leases;
    for (int i = 2; i >= 0; --i) leases.push_back(c.wait_lease(tags[static_cast<std::size_t>(i)]));
    std::set<int> pids;
    for (auto& l : leases) {
        INFO("lease " << l.id() << " says worker " << l.worker_pid());
        CHECK(worker_pid_behind(l.fd()) == l.worker_pid());
        pids.insert(l.worker_pid());
    }
    CHECK(pids.size() == 3);
}

TEST_CASE("lease ids strictly increase in the order leases are granted", "[control]") {
    BrokerHarness h("[pool.echo]\npath = " + echo_worker() + "\nmin_idle = 2\n");
    auto c = Connection::connect(control_socket(h));
    std::uint64_t last = 0;
    for (int i = 0; i < 10; ++i) {
        auto l = c.lease("echo");
        CHECK(l.id() > last);
        last = l.id();
    }
}

// ---- ownership -----------------------------------------------------------------------

TEST_CASE("a closed connection's leases end at once and the worker is leasable again within 10 ms",
          "[control][ownership]") {
    BrokerHarness h("[pool.one]\npath = " + echo_worker() + "\nnotify = none\nmax_instances = 1\n");
    auto first = std::make_unique<Connection>(Connection::connect(control_socket(h)));
    auto l = first->lease("one");
    int pid = l.worker_pid();
    l.forget();
    auto other = Connection::connect(control_socket(h));
    { client::Lease dropped = std::move(l); } // closes the worker connection, no RELEASE
    first.reset();                            // the client hangs up

    auto t0 = Clock::now();
    auto again = other.lease("one", wait_ms(10 * sanitizer_slowdown));
    CHECK(again.worker_pid() == pid);
    CHECK(since(t0) <= 10ms * sanitizer_slowdown + 5ms);
}

TEST_CASE("a detached lease outlives its connection and the same uid renews and releases it from another connection",
          "[control][ownership]") {
    BrokerHarness h("[pool.one]\npath = " + echo_worker() + "\nmax_instances = 1\n" + "[pool.two]\npath = " +
                    echo_worker() + "\nmax_instances = 1\n");
    std::uint64_t id = 0;
    int pid = 0, other_pid = 0;
    {
        auto first = Connection::connect(control_socket(h));
        auto kept = first.lease("one", detached());
        auto attached = first.lease("two");
        id = kept.id();
        pid = kept.worker_pid();
        other_pid = attached.worker_pid();
        kept.forget();
        attached.forget();
    } // the connection closes without RELEASE
    // Once its attached lease has ended, the connection's close is done.
    REQUIRE(h.wait_for([&](auto& s) { return worker_in_state(s, other_pid, WorkerState::idle); }));
    auto s = h.snapshot();
    auto w = snapshot_worker(s, pid);
    REQUIRE(w.has_value());
    CHECK(w->state == WorkerState::leased);
    REQUIRE(w->lease.has_value());
    CHECK(w->lease->id == id);

    auto second = Connection::connect(control_socket(h));
    CHECK(second.renew(id) > 0ms);
    second.release(id);
    REQUIRE(h.wait_for([&](auto& s) { return worker_in_state(s, pid, WorkerState::idle); }));
    CHECK_THROWS_MATCHES(second.release(id), Error, IsFail(FailCode::no_such_lease));
}

TEST_CASE("another uid cannot renew or release a detached lease", "[control][ownership][root]") {
    if (::geteuid() != 0) {
        WARN("not root: cannot connect as another uid");
        return;
    }
    OpenDir open;
    BrokerHarness h(open.ini() + "[pool.one]\npath = " + echo_worker() + "\nmax_instances = 1\n");
    std::uint64_t id = 0;
    int pid = 0;
    {
        auto first = Connection::connect(open.socket());
        auto l = first.lease("one", detached());
        id = l.id();
        pid = l.worker_pid();
        l.forget();
    }
    std::string ids = std::to_string(id);
    auto lines = run_raw_client(nobody_uid, open.socket(), {"RENEW\tr1\t" + ids, "RELEASE\tr2\t" + ids});
    REQUIRE(lines.size() == 2);
    CHECK(lines[0].rfind("FAIL\tr1\tno-such-lease\t", 0) == 0);
    CHECK(lines[1].rfind("FAIL\tr2\tno-such-lease\t", 0) == 0);
    CHECK(worker_in_state(h.snapshot(), pid, WorkerState::leased));
    auto mine = Connection::connect(open.socket());
    CHECK(mine.renew(id) > 0ms); // still there, still renewable by its uid
    mine.release(id);
}

TEST_CASE("another connection of the same uid cannot renew or release a lease that is not detached",
          "[control][ownership]") {
    BrokerHarness h("[pool.one]\npath = " + echo_worker() + "\nmax_instances = 1\n");
    auto owner = Connection::connect(control_socket(h));
    auto l = owner.lease("one");
    auto other = Connection::connect(control_socket(h));
    CHECK_THROWS_MATCHES(other.renew(l.id()), Error, IsFail(FailCode::no_such_lease));
    CHECK_THROWS_MATCHES(other.release(l.id()), Error, IsFail(FailCode::no_such_lease));
    CHECK(worker_in_state(h.snapshot(), l.worker_pid(), WorkerState::leased));
    CHECK(l.renew() > 0ms);
    l.release();
}

// ---- EXPIRED -------------------------------------------------------------------------

TEST_CASE("a lease not renewed within its ttl ends with EXPIRED ttl", "[control][expired]") {
    BrokerHarness h("[pool.echo]\npath = " + echo_worker() + "\nlease_ttl_ms = 200\n");
    auto c = Connection::connect(control_socket(h));
    auto t0 = Clock::now();
    auto l = c.lease("echo");
    CHECK(l.ttl() == 200ms);
    auto e = wait_expired(c, l.id());
    REQUIRE(e.has_value());
    CHECK(e->reason == EndReason::ttl);
    auto took = since(t0);
    CHECK(took >= 200ms);
    CHECK(took < 200ms + 1s * sanitizer_slowdown);
    CHECK_THROWS_MATCHES(l.release(), Error, IsFail(FailCode::no_such_lease));
    REQUIRE(h.wait_for([&](auto& s) { return worker_in_state(s, l.worker_pid(), WorkerState::idle); }));
}

TEST_CASE("a lease asked with ttl_ms expires after that ttl", "[control][expired]") {
    BrokerHarness h("[pool.echo]\npath = " + echo_worker() + "\nlease_ttl_ms = 30000\n");
    auto c = Connection::connect(control_socket(h));
    auto t0 = Clock::now();
    auto l = c.lease("echo", ttl_ms(150));
    CHECK(l.ttl() == 150ms);
    auto e = wait_expired(c, l.id());
    REQUIRE(e.has_value());
    CHECK(e->reason == EndReason::ttl);
    CHECK(since(t0) >= 150ms);
    CHECK(since(t0) < 150ms + 1s * sanitizer_slowdown);
    l.forget();
}

TEST_CASE("a RENEW keeps a lease past its ttl", "[control][expired]") {
    BrokerHarness h("[pool.echo]\npath = " + echo_worker() + "\nlease_ttl_ms = 300\n");
    auto c = Connection::connect(control_socket(h));
    auto l = c.lease("echo");
    auto t0 = Clock::now();
    while (since(t0) < 900ms) { // three ttls
        c.poll(100ms);          // the duration under test: renew every third of the ttl
        CHECK(l.renew() == 300ms);
    }
    CHECK(c.take_expired().empty());
    CHECK(worker_in_state(h.snapshot(), l.worker_pid(), WorkerState::leased));
    // And without renewal it ends.
    auto e = wait_expired(c, l.id());
    REQUIRE(e.has_value());
    CHECK(e->reason == EndReason::ttl);
    l.forget();
}

TEST_CASE("a notify=foreman worker's READY=1 ends its lease with EXPIRED worker-ready", "[control][expired]") {
    BrokerHarness h("[pool.echo]\npath = " + echo_worker() + "\nnotify = foreman\n");
    auto c = Connection::connect(control_socket(h));
    auto l = c.lease("echo");
    CHECK(echo_through(l.fd(), "ping\n") == "ping\n");
    l.take_fd().reset(); // the echo worker sees EOF and says READY=1
    auto e = wait_expired(c, l.id());
    REQUIRE(e.has_value());
    CHECK(e->reason == EndReason::worker_ready);
    // RELEASE after it: the lease is over either way.
    CHECK_THROWS_MATCHES(l.release(), Error, IsFail(FailCode::no_such_lease));
    REQUIRE(h.wait_for([&](auto& s) { return worker_in_state(s, l.worker_pid(), WorkerState::idle); }));
}

TEST_CASE("a worker that exits mid-lease ends it with EXPIRED worker-exit", "[control][expired]") {
    BrokerHarness h("[pool.quitter]\npath = {self}\nargs = worker exit-mid-lease\nnotify = foreman\n");
    auto c = Connection::connect(control_socket(h));
    auto l = c.lease("quitter");
    auto e = wait_expired(c, l.id());
    REQUIRE(e.has_value());
    CHECK(e->reason == EndReason::worker_exit);
    CHECK(wait_pid_gone(l.worker_pid(), 5s));
    l.forget();
}

TEST_CASE("a lease longer than max_processtime_secs ends with EXPIRED processtime and its worker is killed",
          "[control][expired]") {
    BrokerHarness h("[pool.echo]\npath = " + echo_worker() +
                    "\nmax_processtime_secs = 1\nlease_ttl_ms = 30000\nkill_grace_ms = 500\n");
    auto c = Connection::connect(control_socket(h));
    auto t0 = Clock::now();
    auto l = c.lease("echo");
    auto e = wait_expired(c, l.id());
    REQUIRE(e.has_value());
    CHECK(e->reason == EndReason::processtime);
    auto took = since(t0);
    CHECK(took >= 1s);
    CHECK(took < 1s + 1s * sanitizer_slowdown);
    CHECK(wait_pid_gone(l.worker_pid(), 5s));
    l.forget();
}

// ---- STATUS ----------------------------------------------------------------------------

TEST_CASE("STATUS shows every field with its value", "[control][status]") {
    BrokerHarness h(R"(
max_workers = 17
[pool.echo]
path = )" + echo_worker() + R"(
notify = foreman
max_instances = 2
min_idle = 2
[pool.slow]
path = {self}
args = worker never-ready
notify = foreman
min_idle = 1
start_timeout_ms = 60000
)");
    REQUIRE(h.wait_for([](auto& s) {
        bool slow_spawned = false;
        for (auto& p : s.pools)
            if (p.protocol == "slow")
                for (auto& w : p.workers) slow_spawned = slow_spawned || w.pid > 0;
        return count_state(s, "echo", WorkerState::idle) == 2 && slow_spawned;
    }));
    auto c = Connection::connect(control_socket(h));
    auto a = c.lease("echo", as_user("alice"));
    // The echo worker says STATUS=serving once it has the connection.
    REQUIRE(h.wait_for([&](auto& s) {
        auto w = snapshot_worker(s, a.worker_pid());
        return w && w->status == "serving";
    }));

    auto status = c.status();
    INFO(json::serialize(status));
    CHECK(num(status.at("version")) == 1000);
    CHECK(num(status.at("workers_total")) == 3);
    CHECK(num(status.at("max_workers")) == 17);
    CHECK(status.at("shutting_down").as_bool() == false);
    REQUIRE(status.at("pools").as_array().size() == 2);
    auto* echo = pool_of(status, "echo");
    REQUIRE(echo != nullptr);
    CHECK(num(echo->at("queued")) == 0);
    CHECK(num(echo->at("leases_granted")) == 1);
    CHECK(echo->at("draining").as_bool() == false);
    CHECK(num(echo->at("spawn_failures")) == 0);
    REQUIRE(echo->at("workers").as_array().size() == 2);
    auto* leased = worker_with_pid(*echo, a.worker_pid());
    REQUIRE(leased != nullptr);
    CHECK(leased->at("state").as_string() == "leased");
    CHECK(num(leased->at("requests")) == 1);
    CHECK(leased->at("user").as_string() == "alice");
    CHECK(leased->at("status").as_string() == "serving");
    CHECK(static_cast<std::uint64_t>(num(leased->at("lease"))) == a.id());
    auto snap = snapshot_worker(h.snapshot(), a.worker_pid());
    REQUIRE(snap.has_value());
    CHECK(leased->at("id").as_string() == std::to_string(snap->id).c_str());
    for (auto& w : echo->at("workers").as_array()) {
        if (&w.as_object() == leased) continue;
        CHECK(w.at("state").as_string() == "idle");
        CHECK(num(w.at("requests")) == 0);
        CHECK(num(w.at("pid")) > 0);
        CHECK(w.at("id").is_string());
        CHECK(w.at("user").is_string());
        CHECK_FALSE(w.as_object().contains("lease"));
    }
    auto* slow = pool_of(status, "slow");
    REQUIRE(slow != nullptr);
    REQUIRE(slow->at("workers").as_array().size() == 1);
    auto& starting = slow->at("workers").as_array()[0];
    CHECK(starting.at("state").as_string() == "starting");
    CHECK(num(starting.at("pid")) > 0);
    CHECK(num(starting.at("requests")) == 0);

    // Both echo workers leased and one LEASE waiting: queued 1.
    auto b = c.lease("echo", as_user("bob"));
    auto waiting = c.send_lease("echo", wait_ms(10000));
    status = c.status();
    echo = pool_of(status, "echo");
    REQUIRE(echo != nullptr);
    CHECK(num(echo->at("queued")) == 1);
    CHECK(num(echo->at("leases_granted")) == 2);
    for (auto& w : echo->at("workers").as_array()) CHECK(w.at("state").as_string() == "leased");
    CHECK(worker_with_pid(*echo, b.worker_pid())->at("user").as_string() == "bob");

    // A notify=foreman worker released while its connection is open owes a
    // READY=1: shown as starting, not leasable; the waiting LEASE gets it once
    // the connection closes.
    a.release();
    status = c.status();
    CHECK(worker_with_pid(*pool_of(status, "echo"), a.worker_pid())->at("state").as_string() == "starting");
    CHECK(num(pool_of(status, "echo")->at("queued")) == 1);
    a.take_fd().reset();
    auto w = c.wait_lease(waiting);
    CHECK(w.worker_pid() == a.worker_pid());
    status = c.status();
    CHECK(num(pool_of(status, "echo")->at("queued")) == 0);
    CHECK(num(pool_of(status, "echo")->at("leases_granted")) == 3);
    CHECK(num(worker_with_pid(*pool_of(status, "echo"), a.worker_pid())->at("requests")) == 2);
}

TEST_CASE("STATUS shows a retiring worker as stopping and its unregistered pool as draining", "[control][status]") {
    BrokerHarness h("[pool.stubborn]\npath = {self}\nargs = worker ignore-term\nnotify = foreman\n"
                    "min_idle = 1\nkill_grace_ms = 60000\n");
    REQUIRE(h.wait_for([](auto& s) { return count_state(s, "stubborn", WorkerState::idle) == 1; }));
    int pid = all_workers(h.snapshot()).at(0).pid;
    auto c = Connection::connect(control_socket(h));
    c.unregister_pool("stubborn");
    REQUIRE(h.wait_for([](auto& s) { return count_state(s, "stubborn", WorkerState::stopping) == 1; }));
    auto status = c.status();
    INFO(json::serialize(status));
    auto* pool = pool_of(status, "stubborn");
    REQUIRE(pool != nullptr);
    CHECK(pool->at("draining").as_bool());
    auto* w = worker_with_pid(*pool, pid);
    REQUIRE(w != nullptr);
    CHECK(w->at("state").as_string() == "stopping");
    ::kill(pid, SIGKILL); // it ignores SIGTERM; the test does not wait out kill_grace
    CHECK(wait_pid_gone(pid, 5s));
}

// ---- REGISTER / UNREGISTER -------------------------------------------------------------

TEST_CASE("REGISTER then LEASE from the new pool", "[control][register]") {
    BrokerHarness h("[pool.echo]\npath = " + echo_worker() + "\n");
    auto c = Connection::connect(control_socket(h));
    CHECK_THROWS_MATCHES(c.lease("reg"), Error, IsFail(FailCode::unknown_protocol));
    c.register_pool("reg", {{"path", echo_worker()}, {"notify", "foreman"}, {"max_instances", "1"}});
    auto l = c.lease("reg", wait_ms(5000));
    CHECK(echo_through(l.fd(), "registered\n") == "registered\n");
    auto status = c.status();
    auto* reg = pool_of(status, "reg");
    REQUIRE(reg != nullptr);
    CHECK(worker_with_pid(*reg, l.worker_pid()) != nullptr);
    // A bad key is bad-request, as the file would have it.
    CHECK_THROWS_MATCHES(c.register_pool("bad", {{"path", echo_worker()}, {"colour", "red"}}), Error,
                         IsFail(FailCode::bad_request));
    CHECK_THROWS_MATCHES(c.register_pool("nopath", {{"notify", "foreman"}}), Error, IsFail(FailCode::bad_request));
}

TEST_CASE("UNREGISTER drains: the pool takes no new LEASE, its leased workers stop when their leases end",
          "[control][register]") {
    BrokerHarness h("[pool.drain]\npath = " + echo_worker() + "\nmax_instances = 3\nmin_idle = 3\n");
    REQUIRE(h.wait_for([](auto& s) { return count_state(s, "drain", WorkerState::idle) == 3; }));
    auto c = Connection::connect(control_socket(h));
    auto a = c.lease("drain");
    auto b = c.lease("drain");
    int idle_pid = 0;
    for (auto& w : all_workers(h.snapshot()))
        if (w.state == WorkerState::idle) idle_pid = w.pid;
    REQUIRE(idle_pid > 0);
    int now_idle = idle_pid;

    c.unregister_pool("drain");
    CHECK_THROWS_MATCHES(c.lease("drain", wait_ms(0)), Error, IsFail(FailCode::unknown_protocol));
    CHECK_THROWS_MATCHES(c.unregister_pool("drain"), Error, IsFail(FailCode::unknown_protocol));
    // The idle worker stops now; the leased ones live on, the pool draining.
    CHECK(wait_pid_gone(now_idle, 5s));
    auto status = c.status();
    auto* pool = pool_of(status, "drain");
    REQUIRE(pool != nullptr);
    CHECK(pool->at("draining").as_bool());
    CHECK(::kill(a.worker_pid(), 0) == 0);
    CHECK(::kill(b.worker_pid(), 0) == 0);
    CHECK(a.renew() > 0ms); // its leases go on as before

    a.release();
    CHECK(wait_pid_gone(a.worker_pid(), 5s));
    CHECK(::kill(b.worker_pid(), 0) == 0);
    b.release();
    CHECK(wait_pid_gone(b.worker_pid(), 5s));
    REQUIRE(h.wait_for([](auto& s) { return s.workers_total == 0; }));
    // The name is free again at once.
    c.register_pool("drain", {{"path", echo_worker()}});
    auto again = c.lease("drain", wait_ms(5000));
    CHECK(again.worker_pid() > 0);
}

TEST_CASE("UNREGISTER fails the pool's waiting LEASEs with unknown-protocol", "[control][register]") {
    BrokerHarness h("[pool.one]\npath = " + echo_worker() + "\nmax_instances = 1\n");
    auto c = Connection::connect(control_socket(h));
    auto held = c.lease("one");
    auto waiting = c.send_lease("one", wait_ms(10000));
    REQUIRE(h.wait_for([](auto& s) { return s.pools.at(0).queued == 1; }));
    c.unregister_pool("one");
    auto answer = c.wait(waiting);
    REQUIRE(answer.reply.kind == protocol::Reply::Kind::fail);
    CHECK(answer.reply.code == FailCode::unknown_protocol);
    held.release();
    CHECK(wait_pid_gone(held.worker_pid(), 5s));
}

// ---- the control socket file ---------------------------------------------------------

TEST_CASE("the control socket file has control_socket_mode, 0660 by default", "[control][socket]") {
    BrokerHarness h("[pool.echo]\npath = " + std::string(FOREMAN_BIN_DIR) + "/foreman-echo\n");
    struct stat st {};
    REQUIRE(::stat(control_socket(h).c_str(), &st) == 0);
    CHECK(S_ISSOCK(st.st_mode));
    CHECK((st.st_mode & 07777) == 0660);
}

TEST_CASE("a stale control socket left by a dead broker is replaced", "[control][socket]") {
    TempDir dir;
    std::string path = dir.path() + "/control.sock";
    {
        // Bound, never listened on, and its owner gone: what a SIGKILLed broker leaves.
        spawn::unique_fd stale(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        std::strcpy(addr.sun_path, path.c_str());
        REQUIRE(::bind(stale.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    }
    BrokerHarness h("control_socket = " + path + "\n[pool.echo]\npath = " + std::string(FOREMAN_BIN_DIR) +
                    "/foreman-echo\n");
    auto c = Connection::connect(path);
    CHECK(c.broker_version() == 1000);
}

TEST_CASE("a broker does not take over a control socket a live broker answers on", "[control][socket]") {
    BrokerHarness first("[pool.echo]\npath = " + std::string(FOREMAN_BIN_DIR) + "/foreman-echo\n");
    TempDir second;
    std::string conf = second.path() + "/foreman.conf";
    std::ofstream(conf) << "runtime_dir = " << second.path() << "/run\ncontrol_socket = " << control_socket(first)
                        << "\n";
    broker::Config config = broker::load_config(conf);
    CHECK_THROWS_WITH(broker::Broker(config, {conf, {}, false, nullptr}),
                      Catch::Contains("another broker answers on " + control_socket(first)));
    // The first one is untouched.
    auto c = Connection::connect(control_socket(first));
    CHECK(c.broker_version() == 1000);
}
