// The client library against a fake broker: a socketpair whose other end the
// test (or a thread of it) drives by hand, byte for byte and fd for fd.

#include "client/async_connection.hpp"
#include "client/connection.hpp"
#include "client/reply_demux.hpp"
#include "client/request_line.hpp"
#include "client/socket_io.hpp"
#include "protocol/control_line.hpp"

#include <boost/asio/io_context.hpp>
#include "protocol/scm_rights.hpp"

#include <catch2/catch.hpp>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <optional>
#include <dirent.h>
#include <stdexcept>
#include <string>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace foreman;
using client::Error;
using protocol::FailCode;

namespace {

/// The fake broker's own checks: it may run on a thread of its own, where
/// Catch2's assertions must not be used (they are not thread-safe).
void must(bool ok, const char* what) {
    if (!ok) {
        std::fprintf(stderr, "fake broker: %s failed\n", what);
        std::abort();
    }
}

std::pair<spawn::unique_fd, spawn::unique_fd> socket_pair() {
    int sv[2];
    must(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0, "socketpair");
    return {spawn::unique_fd(sv[0]), spawn::unique_fd(sv[1])};
}

void write_all(int fd, std::string_view bytes) {
    while (!bytes.empty()) {
        ssize_t n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
        must(n > 0, "send");
        bytes.remove_prefix(static_cast<std::size_t>(n));
    }
}

std::string read_some(int fd) {
    char buf[256];
    ssize_t n = ::read(fd, buf, sizeof buf);
    return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string();
}

int open_fds() {
    int n = 0;
    DIR* d = ::opendir("/proc/self/fd");
    while (::readdir(d)) ++n;
    ::closedir(d);
    return n;
}

/// The broker's end of the control connection.
struct FakeBroker {
    spawn::unique_fd sock;
    protocol::LineReader reader;

    void send(std::string_view bytes) { write_all(sock.get(), bytes); }

    /// One sendmsg: `line` with descriptors attached by SCM_RIGHTS.
    void send_with_fds(std::string_view line, std::vector<int> fds) {
        std::vector<char> control(CMSG_SPACE(sizeof(int) * fds.size()));
        iovec iov{const_cast<char*>(line.data()), line.size()};
        msghdr msg{};
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.data();
        msg.msg_controllen = control.size();
        cmsghdr* c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
        std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
        must(::sendmsg(sock.get(), &msg, MSG_NOSIGNAL) == static_cast<ssize_t>(line.size()), "sendmsg");
    }

    /// A LEASE OK whose descriptor is one end of a new socketpair; the other
    /// end, which already holds `mark`, is returned so the test can tell
    /// which descriptor the client paired with which line.
    spawn::unique_fd grant(const std::string& tag, std::uint64_t id, const std::string& mark) {
        auto [worker_side, client_side] = socket_pair();
        write_all(worker_side.get(), mark);
        send_with_fds(protocol::ok_line(tag, {std::to_string(id), "4242", "30000"}), {client_side.get()});
        return std::move(worker_side);
    }

    std::string read_line() {
        std::string_view line;
        while (reader.next(line) != protocol::LineReader::Result::line) {
            char* p = reader.prepare(4096);
            ssize_t n = ::read(sock.get(), p, 4096);
            reader.commit(n > 0 ? static_cast<std::size_t>(n) : 0);
            if (n <= 0) return "<eof>";
        }
        return std::string(line);
    }

    protocol::Request read_request() {
        auto r = protocol::parse_request(read_line());
        must(std::holds_alternative<protocol::Request>(r), "parse_request");
        return std::get<protocol::Request>(r);
    }

    void close() { sock.reset(); }
};

/// A connected client and the fake broker behind it, handshake done.
struct Session {
    FakeBroker broker;
    client::Connection conn;
};

Session open_session() {
    auto [c, b] = socket_pair();
    FakeBroker broker{std::move(b), {}};
    broker.send(protocol::version_line()); // both sides speak first
    auto conn = client::Connection::adopt(std::move(c));
    REQUIRE(broker.read_line() == "VERSION\tforeman\t1000");
    return Session{std::move(broker), std::move(conn)};
}

} // namespace

// ---- request lines ------------------------------------------------------------------------

TEST_CASE("format_request writes lines that parse_request reads back", "[client]") {
    protocol::Request r = client::lease_request("echo", {"alice", 500, 0, 1000, true});
    r.tag = "t1";
    auto line = client::format_request(r);
    CHECK(line == "LEASE\tt1\techo\tuser=alice\tttl_ms=500\twait_ms=0\tversion=1000\tdetach=1\n");
    auto back = std::get<protocol::Request>(protocol::parse_request(line.substr(0, line.size() - 1)));
    CHECK(back.lease.user == "alice");
    CHECK(back.lease.ttl_ms == 500u);
    CHECK(back.lease.wait_ms == 0u);
    CHECK(back.lease.detach);

    protocol::Request reg{};
    reg.verb = protocol::Verb::register_pool;
    reg.tag = "x.1";
    reg.protocol = "cat";
    reg.keys = {{"path", "/bin/cat"}, {"args", "-u a=b"}};
    CHECK(client::format_request(reg) == "REGISTER\tx.1\tcat\tpath=/bin/cat\targs=-u a=b\n");
    CHECK(client::request_label(reg) == "REGISTER cat");
}

TEST_CASE("format_request refuses what the protocol cannot carry", "[client]") {
    protocol::Request r = client::lease_request("echo", {});
    r.tag = "bad tag";
    CHECK_THROWS_AS(client::format_request(r), std::invalid_argument);
    r.tag = "t1";
    r.lease.user = "a\tb";
    CHECK_THROWS_AS(client::format_request(r), std::invalid_argument);
    r.lease.user.clear();
    r.lease.protocol.clear();
    CHECK_THROWS_AS(client::format_request(r), std::invalid_argument);
    protocol::Request reg{};
    reg.verb = protocol::Verb::register_pool;
    reg.tag = "t2";
    reg.protocol = "p";
    reg.keys = {{"a=b", "c"}};
    CHECK_THROWS_AS(client::format_request(reg), std::invalid_argument);
    reg.keys = {{"args", std::string(70000, 'x')}};
    CHECK_THROWS_AS(client::format_request(reg), std::invalid_argument);
}

// ---- handshake ------------------------------------------------------------------------------

TEST_CASE("connect sends VERSION at once and reads the broker's", "[client]") {
    auto s = open_session();
    CHECK(s.conn.broker_version() == 1000);
    CHECK(s.conn.fd() >= 0);
}

TEST_CASE("a FAIL version after the broker's VERSION fails the handshake", "[client]") {
    auto [c, b] = socket_pair();
    FakeBroker broker{std::move(b), {}};
    broker.send(protocol::version_line());
    broker.send(protocol::fail_line("*", FailCode::version, "supported: 1000"));
    broker.close();
    try {
        client::Connection::adopt(std::move(c));
        FAIL("no error");
    } catch (const Error& e) {
        CHECK(e.is(FailCode::version));
    }
}

TEST_CASE("the handshake fails with code version when the broker answers FAIL first", "[client]") {
    auto [c, b] = socket_pair();
    FakeBroker broker{std::move(b), {}};
    broker.send(protocol::fail_line("*", FailCode::version, "supported: 1000"));
    broker.close();
    try {
        client::Connection::adopt(std::move(c));
        FAIL("no error");
    } catch (const Error& e) {
        CHECK(e.is(FailCode::version));
        CHECK(std::string(e.what()) == "broker: version: supported: 1000");
    }
}

TEST_CASE("a broker speaking another version is refused with code version", "[client]") {
    auto [c, b] = socket_pair();
    FakeBroker broker{std::move(b), {}};
    broker.send("VERSION\tforeman\t999\n");
    try {
        client::Connection::adopt(std::move(c));
        FAIL("no error");
    } catch (const Error& e) {
        CHECK(e.is(FailCode::version));
        CHECK(std::string(e.what()).find("999") != std::string::npos);
    }
}

TEST_CASE("a broker that hangs up during the handshake is an io Error", "[client]") {
    auto [c, b] = socket_pair();
    b.reset();
    try {
        client::Connection::adopt(std::move(c));
        FAIL("no error");
    } catch (const Error& e) {
        CHECK(e.kind() == Error::Kind::io);
    }
}

TEST_CASE("connect to a path nobody listens on is an io Error naming the path", "[client]") {
    try {
        client::Connection::connect("/nonexistent/foreman.sock");
        FAIL("no error");
    } catch (const Error& e) {
        CHECK(e.kind() == Error::Kind::io);
        CHECK(std::string(e.what()).find("/nonexistent/foreman.sock") != std::string::npos);
    }
}

// ---- replies out of order, descriptors in order -------------------------------------------

TEST_CASE("pipelined LEASEs answered out of order get the descriptors of their own lines", "[client]") {
    auto s = open_session();
    auto t1 = s.conn.send_lease("echo");
    auto t2 = s.conn.send_lease("echo", {"bob", {}, 0, {}, false});
    auto t3 = s.conn.send_lease("cat");
    protocol::Request rel{};
    rel.verb = protocol::Verb::release;
    rel.lease_id = 99;
    auto t4 = s.conn.send(rel);
    CHECK((t1 == "t1" && t2 == "t2" && t3 == "t3" && t4 == "t4"));
    CHECK(s.broker.read_request().lease.protocol == "echo");
    CHECK(s.broker.read_request().lease.user == "bob");
    CHECK(s.broker.read_request().lease.protocol == "cat");
    CHECK(s.broker.read_request().lease_id == 99);

    // Answered 3, (release), 1, EXPIRED, 2; all written before the client reads.
    auto w3 = s.broker.grant("t3", 12, "three");
    s.broker.send(protocol::ok_line("t4"));
    auto w1 = s.broker.grant("t1", 13, "one");
    s.broker.send(protocol::expired_line(7, protocol::EndReason::worker_ready));
    auto w2 = s.broker.grant("t2", 14, "two");

    auto a2 = s.conn.wait(t2);
    REQUIRE(a2.reply.kind == protocol::Reply::Kind::ok);
    CHECK(a2.reply.fields[0] == "14");
    CHECK(read_some(a2.fd.get()) == "two");
    auto l1 = s.conn.wait_lease(t1);
    CHECK(l1.id() == 13);
    CHECK(l1.worker_pid() == 4242);
    CHECK(l1.ttl() == std::chrono::milliseconds(30000));
    CHECK(read_some(l1.fd()) == "one");
    l1.forget();
    CHECK_NOTHROW(client::decode_empty(s.conn.wait(t4)));
    auto g3 = client::decode_lease(s.conn.wait(t3));
    CHECK(g3.lease_id == 12);
    CHECK(read_some(g3.fd.get()) == "three");

    // The descriptors are close-on-exec (MSG_CMSG_CLOEXEC).
    CHECK((::fcntl(g3.fd.get(), F_GETFD) & FD_CLOEXEC) != 0);
    auto expired = s.conn.take_expired();
    REQUIRE(expired.size() == 1);
    CHECK(expired[0].lease_id == 7);
    CHECK(expired[0].reason == protocol::EndReason::worker_ready);
    CHECK(s.conn.take_expired().empty());
}

TEST_CASE("a FAIL to one LEASE takes no descriptor from the next", "[client]") {
    auto s = open_session();
    auto t1 = s.conn.send_lease("echo");
    auto t2 = s.conn.send_lease("echo");
    s.broker.read_request();
    s.broker.read_request();
    s.broker.send(protocol::fail_line("t1", FailCode::busy, "no worker of pool echo came free within 5000 ms"));
    auto w2 = s.broker.grant("t2", 5, "five");
    auto l2 = s.conn.wait_lease(t2);
    CHECK(read_some(l2.fd()) == "five");
    l2.forget();
    try {
        s.conn.wait_lease(t1);
        FAIL("no error");
    } catch (const Error& e) {
        CHECK(e.is(FailCode::busy));
        CHECK(std::string(e.what()) == "LEASE echo: busy: no worker of pool echo came free within 5000 ms");
    }
}

TEST_CASE("a LEASE OK without its descriptor is a protocol Error", "[client]") {
    client::ReplyDemux d;
    protocol::Request r = client::lease_request("echo", {});
    r.tag = "a";
    d.sent(r);
    d.received(protocol::version_line());
    d.received(protocol::ok_line("a", {"1", "2", "3"}));
    auto answer = d.take("a");
    REQUIRE(answer);
    try {
        client::decode_lease(std::move(*answer));
        FAIL("no error");
    } catch (const Error& e) {
        CHECK(e.kind() == Error::Kind::protocol);
    }
    CHECK(!d.fatal());
}

TEST_CASE("a reply to a tag never sent, or a bad line, is fatal", "[client]") {
    client::ReplyDemux d;
    d.received(protocol::version_line());
    d.received("OK\tzz\n");
    REQUIRE(d.fatal());
    CHECK(d.fatal()->kind() == Error::Kind::protocol);

    client::ReplyDemux e;
    e.received("OK\tt1\n"); // not VERSION first
    REQUIRE(e.fatal());

    client::ReplyDemux f;
    f.received(protocol::version_line() + "HELLO\n");
    REQUIRE(f.fatal());
    CHECK(f.fatal()->kind() == Error::Kind::protocol);
}

TEST_CASE("replies split across reads are reassembled", "[client]") {
    client::ReplyDemux d;
    protocol::Request r{};
    r.verb = protocol::Verb::renew;
    r.tag = "t9";
    d.sent(r);
    d.received("VERS");
    d.received("ION\tforeman\t1000\nOK\tt");
    CHECK(d.broker_version() == 1000u);
    CHECK(!d.take("t9"));
    d.received("9\t250\nEXPIRED\t3\tttl\n");
    auto a = d.take("t9");
    REQUIRE(a);
    CHECK(client::decode_renew(*a) == std::chrono::milliseconds(250));
    CHECK(d.take_expired().size() == 1);
}

// ---- EXPIRED ------------------------------------------------------------------------------------

TEST_CASE("EXPIRED lines reach the callback as they are read", "[client]") {
    auto s = open_session();
    std::vector<client::Expired> seen;
    s.conn.on_expired([&](const client::Expired& e) { seen.push_back(e); });
    auto tag = s.conn.send(protocol::Request{protocol::Verb::status, "", {}, 0, {}, {}});
    s.broker.read_request();
    s.broker.send(protocol::expired_line(11, protocol::EndReason::ttl));
    s.broker.send(protocol::expired_line(12, protocol::EndReason::processtime));
    s.broker.send(protocol::ok_line(tag, {R"({"version":1000,"pools":[]})"}));
    auto status = client::decode_status(s.conn.wait(tag));
    CHECK(status.at("version").as_int64() == 1000);
    REQUIRE(seen.size() == 2);
    CHECK(seen[0].lease_id == 11);
    CHECK(seen[1].reason == protocol::EndReason::processtime);
    CHECK(s.conn.take_expired().empty());

    // poll() handles an EXPIRED that arrives while no call is waiting.
    s.broker.send(protocol::expired_line(13, protocol::EndReason::shutdown));
    CHECK(s.conn.poll(std::chrono::milliseconds(1000)));
    REQUIRE(seen.size() == 3);
    CHECK(seen[2].lease_id == 13);
    CHECK_FALSE(s.conn.poll(std::chrono::milliseconds(0)));
}

TEST_CASE("EXPIRED queued before a callback is set is handed to it", "[client]") {
    auto s = open_session();
    s.broker.send(protocol::expired_line(1, protocol::EndReason::worker_exit));
    s.conn.poll(std::chrono::milliseconds(1000));
    int calls = 0;
    s.conn.on_expired([&](const client::Expired& e) {
        ++calls;
        CHECK(e.reason == protocol::EndReason::worker_exit);
    });
    CHECK(calls == 1);
}

// ---- FAIL codes -------------------------------------------------------------------------------

TEST_CASE("every FAIL code becomes an Error with that code", "[client]") {
    auto s = open_session();
    const FailCode codes[] = {FailCode::bad_request,   FailCode::version,       FailCode::unknown_protocol,
                              FailCode::busy,          FailCode::overloaded,    FailCode::spawn_failed,
                              FailCode::no_such_lease, FailCode::denied,        FailCode::exists,
                              FailCode::shutting_down};
    for (auto code : codes) {
        std::thread broker([&] {
            auto r = s.broker.read_request();
            s.broker.send(protocol::fail_line(r.tag, code, "because"));
        });
        try {
            s.conn.renew(42);
            FAIL("no error");
        } catch (const Error& e) {
            CHECK(e.kind() == Error::Kind::refused);
            CHECK(e.code() == code);
            CHECK(std::string(e.what()) == "RENEW 42: " + std::string(protocol::to_string(code)) + ": because");
        }
        broker.join();
    }
    // The connection is still fine after all those refusals.
    std::thread broker([&] {
        auto r = s.broker.read_request();
        s.broker.send(protocol::ok_line(r.tag, {"900"}));
    });
    CHECK(s.conn.renew(42) == std::chrono::milliseconds(900));
    broker.join();
}

TEST_CASE("a FAIL with tag * fails the waiting call and every later one", "[client]") {
    auto s = open_session();
    auto t1 = s.conn.send_lease("echo");
    s.broker.read_request();
    s.broker.send(protocol::fail_line("*", FailCode::bad_request, "line too long"));
    s.broker.close();
    try {
        s.conn.wait(t1);
        FAIL("no error");
    } catch (const Error& e) {
        CHECK(e.is(FailCode::bad_request));
        CHECK(std::string(e.what()) == "broker: bad-request: line too long");
    }
    CHECK_THROWS_AS(s.conn.release(1), Error);
    try {
        s.conn.status();
    } catch (const Error& e) {
        CHECK(e.is(FailCode::bad_request)); // the first reason stays, not the EOF after it
    }
}

TEST_CASE("a broker that hangs up fails the waiting call with an io Error", "[client]") {
    auto s = open_session();
    auto t1 = s.conn.send_lease("echo");
    s.broker.close();
    try {
        s.conn.wait(t1);
        FAIL("no error");
    } catch (const Error& e) {
        CHECK(e.kind() == Error::Kind::io);
    }
    CHECK_THROWS_AS(s.conn.wait("t77"), std::invalid_argument);
}

// ---- RAII ------------------------------------------------------------------------------------

TEST_CASE("a Lease releases itself when destroyed, once, and closes its descriptor", "[client]") {
    auto s = open_session();
    std::vector<std::string> seen;
    std::thread broker([&] {
        auto r = s.broker.read_request();
        s.broker.grant(r.tag, 31, "x"); // worker side closed at once: fine
        for (;;) {
            auto line = s.broker.read_line();
            if (line == "<eof>") break;
            seen.push_back(line);
            auto req = std::get<protocol::Request>(protocol::parse_request(line));
            if (req.verb == protocol::Verb::renew) s.broker.send(protocol::ok_line(req.tag, {"777"}));
            else s.broker.send(protocol::ok_line(req.tag));
        }
    });
    {
        auto lease = s.conn.lease("echo", {"", 2000, {}, {}, false});
        CHECK(lease.held());
        CHECK(lease.renew() == std::chrono::milliseconds(777));
        CHECK(lease.ttl() == std::chrono::milliseconds(777));
        client::Lease moved = std::move(lease); // the moved-from one must not release
        CHECK_FALSE(lease.held());
        client::Lease assigned;
        assigned = std::move(moved);
        CHECK(assigned.id() == 31);
    }
    ::shutdown(s.conn.fd(), SHUT_WR); // the broker thread sees EOF
    broker.join();
    CHECK(seen == std::vector<std::string>{"RENEW\tt2\t31", "RELEASE\tt3\t31"});
}

TEST_CASE("explicit release and forget leave nothing for the destructor", "[client]") {
    auto s = open_session();
    std::vector<std::string> seen;
    std::thread broker([&] {
        for (int i = 0; i < 2; ++i) {
            auto r = s.broker.read_request();
            s.broker.grant(r.tag, 40 + static_cast<std::uint64_t>(i), "x");
        }
        auto r = s.broker.read_request();
        seen.push_back(client::request_label(r));
        s.broker.send(protocol::fail_line(r.tag, FailCode::no_such_lease, "ended"));
        seen.push_back(s.broker.read_line());
    });
    {
        auto a = s.conn.lease("echo");
        auto b = s.conn.lease("echo");
        b.forget();
        CHECK_THROWS_AS(a.release(), Error); // no-such-lease, yet not held any more
        CHECK_FALSE(a.held());
    }
    ::shutdown(s.conn.fd(), SHUT_WR); // let the broker thread see EOF
    broker.join();
    REQUIRE(seen.size() == 2);
    CHECK(seen[0] == "RELEASE 40");
    CHECK(seen[1] == "<eof>");
}

TEST_CASE("a Lease outliving its Connection only closes its descriptor", "[client]") {
    client::Lease lease;
    {
        auto s = open_session();
        std::thread broker([&] {
            auto r = s.broker.read_request();
            s.broker.grant(r.tag, 50, "x");
        });
        lease = s.conn.lease("echo");
        broker.join();
    }
    CHECK(lease.held());
    CHECK_THROWS_AS(lease.renew(), Error);
}

// ---- descriptors -----------------------------------------------------------------------------

TEST_CASE("recv_with_fds closes what arrived and throws when descriptors were truncated", "[client]") {
    auto [a, b] = socket_pair();
    FakeBroker sender{std::move(b), {}};
    std::vector<spawn::unique_fd> held;
    std::vector<int> raw;
    for (std::size_t i = 0; i < protocol::max_fds_per_read + 4; ++i) {
        held.emplace_back(::dup(0));
        raw.push_back(held.back().get());
    }
    int before = open_fds();
    sender.send_with_fds("x", raw);
    held.clear();
    int sent_only = open_fds();
    std::vector<spawn::unique_fd> fds;
    char buf[16];
    CHECK_THROWS_AS(client::recv_with_fds(a.get(), buf, sizeof buf, fds), Error);
    CHECK(fds.empty());
    CHECK(open_fds() == sent_only);
    CHECK(sent_only < before);
}

// ---- Asio ------------------------------------------------------------------------------------

TEST_CASE("AsyncConnection: handshake, lease with descriptor, EXPIRED, FAIL, release", "[client]") {
    auto [c, b] = socket_pair();
    FakeBroker broker{std::move(b), {}};
    broker.send(protocol::version_line());
    spawn::unique_fd worker_side;
    std::string hello;
    std::optional<std::uint64_t> wait_ms;
    std::uint64_t released = 0;
    std::thread broker_thread([&] {
        hello = broker.read_line();
        auto l1 = broker.read_request();
        auto l2 = broker.read_request();
        wait_ms = l2.lease.wait_ms;
        broker.send(protocol::fail_line(l2.tag, FailCode::busy, "no worker free"));
        broker.send(protocol::expired_line(3, protocol::EndReason::ttl));
        worker_side = broker.grant(l1.tag, 60, "sixty");
        auto rel = broker.read_request();
        released = rel.lease_id;
        broker.send(protocol::ok_line(rel.tag));
        auto st = broker.read_request();
        broker.send(protocol::ok_line(st.tag, {R"({"version":1000})"}));
    });

    boost::asio::io_context io;
    std::vector<std::string> events;
    client::AsyncConnection::async_adopt(
        io, std::move(c), [&](std::optional<Error> err, client::AsyncConnection::Ptr conn) {
            REQUIRE_FALSE(err);
            events.push_back("connected");
            conn->on_expired([&](const client::Expired& e) { events.push_back("expired " + std::to_string(e.lease_id)); });
            conn->async_lease("echo", {}, [&, conn](std::optional<Error> err, client::LeaseGrant g) {
                REQUIRE_FALSE(err);
                events.push_back("lease " + std::to_string(g.lease_id) + " " + read_some(g.fd.get()));
                conn->async_release(g.lease_id, [&, conn](std::optional<Error> err) {
                    CHECK_FALSE(err);
                    events.push_back("released");
                    conn->async_status([&, conn](std::optional<Error> err, boost::json::value v) {
                        CHECK_FALSE(err);
                        events.push_back("status " + std::to_string(v.at("version").as_int64()));
                        conn->close();
                    });
                });
            });
            conn->async_lease("echo", {"", {}, 0, {}, false}, [&](std::optional<Error> err, client::LeaseGrant g) {
                REQUIRE(err);
                CHECK(err->is(FailCode::busy));
                CHECK(!g.fd);
                events.push_back("busy");
            });
        });
    io.run();
    broker_thread.join();
    CHECK(hello == "VERSION\tforeman\t1000");
    CHECK(wait_ms == 0u);
    CHECK(released == 60);
    CHECK(events == std::vector<std::string>{"connected", "busy", "expired 3", "lease 60 sixty", "released",
                                             "status 1000"});
}

TEST_CASE("AsyncConnection: a broken connection fails every waiting handler", "[client]") {
    auto [c, b] = socket_pair();
    FakeBroker broker{std::move(b), {}};
    broker.send(protocol::version_line());
    boost::asio::io_context io;
    int failed = 0;
    client::AsyncConnection::async_adopt(io, std::move(c), [&](std::optional<Error> err, client::AsyncConnection::Ptr conn) {
        REQUIRE_FALSE(err);
        for (int i = 0; i < 3; ++i)
            conn->async_renew(1, [&](std::optional<Error> err, std::chrono::milliseconds) {
                REQUIRE(err);
                CHECK(err->is(FailCode::overloaded));
                ++failed;
            });
        broker.send(protocol::fail_line("*", FailCode::overloaded, "max_clients reached"));
        broker.close();
    });
    io.run();
    CHECK(failed == 3);
}

TEST_CASE("AsyncConnection: connecting to nowhere reports an io Error", "[client]") {
    boost::asio::io_context io;
    bool called = false;
    client::AsyncConnection::async_connect(io, "/nonexistent/foreman.sock",
                                           [&](std::optional<Error> err, client::AsyncConnection::Ptr conn) {
                                               called = true;
                                               REQUIRE(err);
                                               CHECK(err->kind() == Error::Kind::io);
                                               CHECK(!conn);
                                           });
    io.run();
    CHECK(called);
}
