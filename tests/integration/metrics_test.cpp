// Prometheus metrics over HTTP (metrics_listen, docs/metrics.md): a real
// broker on 127.0.0.1:0, real leases and workers, real HTTP requests on raw
// sockets, and every scrape read back by a strict parser of the text format.

#include "broker/metrics_server.hpp"
#include "broker_harness.hpp"
#include "prometheus_text.hpp"

#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <thread>

using namespace foreman::test;
using namespace std::chrono_literals;
using foreman::lease::WorkerState;
using foreman::protocol::EndReason;
using foreman::protocol::FailCode;
using Clock = std::chrono::steady_clock;

namespace {


/// A socket the test closes at the end.
struct Fd {
    int fd = -1;
    explicit Fd(int f) : fd(f) {}
    ~Fd() {
        if (fd >= 0) ::close(fd);
    }
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
};

int connect_tcp(std::uint16_t port) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    return fd;
}

int connect_unix(const std::string& path) {
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    REQUIRE(path.size() < sizeof addr.sun_path);
    path.copy(addr.sun_path, path.size());
    REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    return fd;
}

void send_all(int fd, const std::string& data) {
    std::size_t sent = 0;
    while (sent < data.size()) {
        ssize_t n = ::send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
        REQUIRE(n > 0);
        sent += static_cast<std::size_t>(n);
    }
}

/// What arrives until the peer closes (or `timeout`: then `closed` is false).
struct Received {
    std::string data;
    bool closed = false;
};

Received read_until_closed(int fd, std::chrono::milliseconds timeout = 10s * sanitizer_slowdown) {
    Received r;
    auto deadline = Clock::now() + timeout;
    char buf[65536];
    for (;;) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
        if (left <= 0) return r;
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(left)) != 1) return r;
        ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        if (n <= 0) {
            r.closed = true; // EOF, or a reset: the server is done with us either way
            return r;
        }
        r.data.append(buf, static_cast<std::size_t>(n));
    }
}

struct HttpResponse {
    int status = 0;
    std::map<std::string, std::string> headers; ///< names in lower case
    std::string body;
};

/// Takes one response off the front of `raw` (Content-Length framing).
HttpResponse take_response(std::string& raw) {
    HttpResponse r;
    auto head_end = raw.find("\r\n\r\n");
    REQUIRE(head_end != std::string::npos);
    std::string head = raw.substr(0, head_end);
    REQUIRE(head.rfind("HTTP/1.", 0) == 0);
    r.status = std::stoi(head.substr(9, 3));
    std::size_t pos = head.find("\r\n");
    while (pos != std::string::npos && pos < head.size()) {
        std::size_t next = head.find("\r\n", pos + 2);
        std::string line = head.substr(pos + 2, next == std::string::npos ? std::string::npos : next - pos - 2);
        auto colon = line.find(':');
        REQUIRE(colon != std::string::npos);
        std::string name = line.substr(0, colon);
        for (auto& ch : name) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
        std::string value = line.substr(colon + 1);
        value.erase(0, value.find_first_not_of(' '));
        r.headers[name] = value;
        pos = next;
    }
    REQUIRE(r.headers.count("content-length"));
    std::size_t length = std::stoul(r.headers["content-length"]);
    REQUIRE(raw.size() >= head_end + 4 + length);
    r.body = raw.substr(head_end + 4, length);
    raw.erase(0, head_end + 4 + length);
    return r;
}

/// Sends `request` as it is on a new connection and reads the one response.
HttpResponse http(std::uint16_t port, const std::string& request) {
    Fd c(connect_tcp(port));
    send_all(c.fd, request);
    Received got = read_until_closed(c.fd);
    REQUIRE(got.closed);
    return take_response(got.data);
}

std::string get(const std::string& target) {
    return "GET " + target + " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
}

PromText scrape(BrokerHarness& h) {
    HttpResponse r = http(h.broker().metrics_port(), get("/metrics"));
    REQUIRE(r.status == 200);
    INFO(r.body);
    try {
        return parse_prometheus_text(r.body);
    } catch (const std::exception& e) {
        FAIL("the scrape is not valid exposition text: " << e.what());
        throw;
    }
}

/// Polls scrapes until `ok` holds: for what only the metrics show.
template <class F>
bool scrape_until(BrokerHarness& h, F ok, std::chrono::milliseconds timeout = 10s * sanitizer_slowdown) {
    auto deadline = Clock::now() + timeout;
    for (;;) {
        if (ok(scrape(h))) return true;
        if (Clock::now() >= deadline) return false;
        std::this_thread::sleep_for(5ms);
    }
}

/// A config with metrics on a free loopback port; leases still held at the
/// end do not make the harness's stop wait.
std::string metrics_conf(const std::string& pools) {
    return "metrics_listen = 127.0.0.1:0\nshutdown_grace_ms = 0\n" + pools;
}

const Labels pool_echo{{"pool", "echo"}};

} // namespace

TEST_CASE("a scrape shows the leases, their ends and waits, the workers and the failures that happened",
          "[metrics]") {
    BrokerHarness h(metrics_conf("[pool.echo]\npath = " + echo_worker() +
                                 "\nmin_idle = 1\nmax_instances = 2\n"
                                 "[pool.once]\npath = " + echo_worker() +
                                 "\nmax_requests = 1\nrecycle_jitter_pct = 0\n"
                                 "[pool.stubborn]\npath = {self}\nargs = worker ignore-term\nnotify = foreman\n"
                                 "max_requests = 1\nrecycle_jitter_pct = 0\nkill_grace_ms = 100\n"
                                 "[pool.crash]\npath = {self}\nargs = worker crash-at-start\nnotify = foreman\n"));
    REQUIRE(h.broker().metrics_port() != 0);
    CHECK(h.broker().metrics_address() == "127.0.0.1:" + std::to_string(h.broker().metrics_port()));
    auto c = h.client();
    const auto uid = static_cast<foreman::lease::Uid>(::getuid());

    // echo: one lease released, one left to expire, one whose holder goes away.
    auto released = h.lease(*c, "echo");
    REQUIRE(h.broker().release(released.lease, c->id, uid));
    auto expiring = c->wait_granted(h.ask(*c, "echo", {}, std::nullopt, 100ms));
    REQUIRE(expiring);
    CHECK(c->wait_expired(expiring->lease) == EndReason::ttl);
    auto gone = h.client();
    h.lease(*gone, "echo");
    h.broker().close_client(gone->id);
    REQUIRE(h.wait_for([](auto& s) { return count_state(s, "echo", WorkerState::idle) == 2; }));

    // once: its worker is retired after one lease; stubborn: ignores SIGTERM and is killed.
    auto one = h.lease(*c, "once");
    REQUIRE(h.broker().release(one.lease, c->id, uid));
    auto kept = h.lease(*c, "stubborn");
    REQUIRE(h.broker().release(kept.lease, c->id, uid));
    REQUIRE(h.wait_for([](auto& s) {
        std::size_t left = 0;
        for (const auto& p : s.pools)
            if (p.protocol == "once" || p.protocol == "stubborn") left += p.workers.size();
        return left == 0;
    }));

    // crash: its workers die before they are ready; a LEASE there fails.
    auto failed = c->wait_rejected(h.ask(*c, "crash", {}, 50ms));
    REQUIRE(failed);
    REQUIRE(h.wait_for([](auto& s) {
        for (const auto& p : s.pools)
            if (p.protocol == "crash") return p.spawn_failures >= 1;
        return false;
    }));
    // A LEASE of a pool that does not exist.
    auto unknown = c->wait_rejected(h.ask(*c, "no-such-pool", {}, 0ms));
    REQUIRE(unknown);
    CHECK(unknown->code == FailCode::unknown_protocol);

    const PromText m = scrape(h);
    const auto snap = h.snapshot();

    CHECK(m.value("foreman_leases_granted_total", pool_echo) == 3);
    auto ended = [&](const std::string& pool, const std::string& reason) {
        return m.value("foreman_leases_ended_total", {{"pool", pool}, {"reason", reason}});
    };
    CHECK(ended("echo", "release") == 1);
    CHECK(ended("echo", "ttl") == 1);
    CHECK(ended("echo", "disconnect") == 1);
    for (const char* r : {"worker-ready", "worker-exit", "processtime", "shutdown"}) CHECK(ended("echo", r) == 0);
    CHECK(ended("once", "release") == 1);
    CHECK(ended("stubborn", "release") == 1);

    CHECK(m.value("foreman_lease_wait_seconds_count", pool_echo) == 3);
    CHECK(m.value("foreman_lease_wait_seconds_sum", pool_echo).value() >= 0);
    CHECK(m.value("foreman_lease_wait_seconds_bucket", {{"pool", "echo"}, {"le", "10"}}) == 3);

    CHECK(m.value("foreman_workers", {{"pool", "echo"}, {"state", "idle"}}) == 2);
    for (const char* s : {"starting", "leased", "stopping"})
        CHECK(m.value("foreman_workers", {{"pool", "echo"}, {"state", s}}) == 0);
    CHECK(m.value("foreman_queue_length", pool_echo) == 0);

    for (const auto& p : snap.pools)
        if (p.protocol == "echo") CHECK(m.value("foreman_spawns_total", pool_echo) == p.workers_started);
    CHECK(m.value("foreman_spawns_total", {{"pool", "once"}}) == 1);
    CHECK(m.value("foreman_spawn_failures_total", pool_echo) == 0);
    CHECK(m.value("foreman_spawn_failures_total", {{"pool", "crash"}}).value() >= 1);

    CHECK(m.value("foreman_worker_exits_total", {{"pool", "once"}, {"cause", "retired"}}) == 1);
    CHECK(m.value("foreman_worker_exits_total", {{"pool", "stubborn"}, {"cause", "killed"}}) == 1);
    CHECK(m.value("foreman_worker_exits_total", {{"pool", "crash"}, {"cause", "exited"}}).value() >= 1);
    CHECK(m.sum("foreman_worker_exits_total", pool_echo) == 0);

    CHECK(m.sum("foreman_lease_rejections_total", {{"pool", "crash"}}) >= 1);
    CHECK(m.value("foreman_lease_rejections_total", {{"pool", ""}, {"code", "unknown-protocol"}}) == 1);
    CHECK(m.sum("foreman_lease_rejections_total", pool_echo) == 0);

    CHECK(m.value("foreman_control_connections") == 0);
    CHECK(m.value("foreman_max_workers") == 256);
    CHECK(m.value("foreman_start_time_seconds").value() > 1.6e9);
}

TEST_CASE("waiting LEASEs show in the queue gauge, and their wait in the histogram once granted", "[metrics]") {
    BrokerHarness h(metrics_conf("[pool.one]\npath = " + echo_worker() + "\nmax_instances = 1\n"));
    auto c = h.client();
    auto held = h.lease(*c, "one");
    auto waiting = h.ask(*c, "one", {}, 10s);
    REQUIRE(h.wait_for([](auto& s) { return s.pools.at(0).queued == 1; }));
    PromText m = scrape(h);
    CHECK(m.value("foreman_queue_length", {{"pool", "one"}}) == 1);
    CHECK(m.value("foreman_workers", {{"pool", "one"}, {"state", "leased"}}) == 1);
    CHECK(m.value("foreman_lease_wait_seconds_count", {{"pool", "one"}}) == 1);

    auto t0 = Clock::now();
    std::this_thread::sleep_for(20ms); // the wait under test: it must show in the histogram
    REQUIRE(h.broker().release(held.lease, c->id, static_cast<foreman::lease::Uid>(::getuid())));
    REQUIRE(c->wait_granted(waiting));
    auto waited = std::chrono::duration<double>(Clock::now() - t0).count();

    m = scrape(h);
    CHECK(m.value("foreman_queue_length", {{"pool", "one"}}) == 0);
    CHECK(m.value("foreman_lease_wait_seconds_count", {{"pool", "one"}}) == 2);
    // The queued one is not among those within 10 ms.
    CHECK(m.value("foreman_lease_wait_seconds_bucket", {{"pool", "one"}, {"le", "0.01"}}).value() <= 1);
    const double sum = m.value("foreman_lease_wait_seconds_sum", {{"pool", "one"}}).value();
    CHECK(sum >= 0.02);
    CHECK(sum <= waited + 1.0 * sanitizer_slowdown);
}

TEST_CASE("GET /metrics answers 200 text/plain version 0.0.4; other paths 404, other methods 405", "[metrics]") {
    BrokerHarness h(metrics_conf("[pool.echo]\npath = " + echo_worker() + "\n"));
    const auto port = h.broker().metrics_port();

    HttpResponse ok = http(port, get("/metrics"));
    CHECK(ok.status == 200);
    CHECK(ok.headers["content-type"] == "text/plain; version=0.0.4");
    CHECK_NOTHROW(parse_prometheus_text(ok.body));
    CHECK(http(port, get("/metrics?name[]=foreman_workers")).status == 200); // parameters are ignored
    CHECK(http(port, "GET /metrics HTTP/1.0\r\n\r\n").status == 200);

    CHECK(http(port, get("/")).status == 404);
    CHECK(http(port, get("/metrics/")).status == 404);
    CHECK(http(port, get("/metricsx")).status == 404);

    HttpResponse post =
        http(port, "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    CHECK(post.status == 405);
    CHECK(post.headers["allow"] == "GET");
    CHECK(http(port, "DELETE /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").status == 405);
    CHECK(http(port, "HEAD /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").status == 405);

    CHECK(http(port, "HELLO THERE\r\n\r\n").status == 400);
    CHECK(http(port, "GET /metrics HTTP/1.1\r\nX-Big: " + std::string(20000, 'a') + "\r\n\r\n").status == 431);
}

TEST_CASE("several scrapers are served at once, and one connection serves request after request", "[metrics]") {
    BrokerHarness h(metrics_conf("[pool.echo]\npath = " + echo_worker() + "\n"));
    const auto port = h.broker().metrics_port();

    std::vector<std::unique_ptr<Fd>> scrapers;
    for (int i = 0; i < 8; ++i) scrapers.push_back(std::make_unique<Fd>(connect_tcp(port)));
    for (auto& s : scrapers) send_all(s->fd, get("/metrics"));
    for (auto& s : scrapers) {
        Received got = read_until_closed(s->fd);
        REQUIRE(got.closed);
        CHECK(take_response(got.data).status == 200);
    }

    // Keep-alive, pipelined: two requests in one write, the second closes.
    Fd c(connect_tcp(port));
    send_all(c.fd, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" + get("/nope"));
    Received got = read_until_closed(c.fd);
    REQUIRE(got.closed);
    CHECK(take_response(got.data).status == 200);
    CHECK(take_response(got.data).status == 404);
    CHECK(got.data.empty());
}

TEST_CASE("a slow HTTP client holds up neither a lease nor another scrape", "[metrics]") {
    BrokerHarness h(metrics_conf("[pool.echo]\npath = " + echo_worker() + "\n"));
    const auto port = h.broker().metrics_port();
    Fd slow(connect_tcp(port));
    send_all(slow.fd, "GET /metr"); // and nothing more
    Fd silent(connect_tcp(port));    // sends nothing at all

    auto c = h.client();
    auto g = h.lease(*c, "echo");
    CHECK(echo_through(g.conn.get(), "still served\n") == "still served\n");
    CHECK(scrape(h).value("foreman_leases_granted_total", pool_echo) == 1);

    pollfd p{slow.fd, POLLIN, 0};
    CHECK(::poll(&p, 1, 0) == 0); // no answer to half a request
}

TEST_CASE("open control connections show in foreman_control_connections", "[metrics]") {
    BrokerHarness h(metrics_conf("[pool.echo]\npath = " + echo_worker() + "\n"));
    const std::string control = h.broker().global().control_socket;
    auto a = std::make_unique<Fd>(connect_unix(control));
    auto b = std::make_unique<Fd>(connect_unix(control));
    CHECK(scrape_until(h, [](const PromText& m) { return m.value("foreman_control_connections") == 2; }));
    a.reset();
    CHECK(scrape_until(h, [](const PromText& m) { return m.value("foreman_control_connections") == 1; }));
    b.reset();
    CHECK(scrape_until(h, [](const PromText& m) { return m.value("foreman_control_connections") == 0; }));
}

TEST_CASE("a metrics address that cannot be bound stops the start with an error naming it", "[metrics]") {
    Fd taken(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(taken.fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    REQUIRE(::listen(taken.fd, 1) == 0);
    socklen_t len = sizeof addr;
    REQUIRE(::getsockname(taken.fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
    const std::string listen = "127.0.0.1:" + std::to_string(ntohs(addr.sin_port));

    try {
        BrokerHarness h("metrics_listen = " + listen + "\n[pool.echo]\npath = " + echo_worker() + "\nmin_idle = 1\n");
        FAIL("the broker started on a metrics address in use");
    } catch (const std::runtime_error& e) {
        CHECK_THAT(std::string(e.what()), Catch::Contains("metrics_listen=" + listen) &&
                                              Catch::Contains("cannot bind") && Catch::Contains("in use"));
    }
}

TEST_CASE("the metrics server cuts off a client that sends no complete request in time, and caps connections",
          "[metrics]") {
    boost::asio::io_context io;
    foreman::broker::MetricsServerLimits limits;
    limits.read_timeout = 300ms;
    limits.max_connections = 2;
    foreman::broker::MetricsServer server(io, "127.0.0.1:0", [] { return std::string("# nothing\n"); }, limits);
    server.start();
    std::thread runner([&] { io.run(); });
    const auto port = server.local_endpoint().port();

    Fd slow(connect_tcp(port));
    send_all(slow.fd, "GET /metrics HTTP/1.1\r\nHost:");
    auto t0 = Clock::now();
    Fd second(connect_tcp(port));
    {
        // A third connection beyond the cap of two is closed at once, unanswered.
        Fd third(connect_tcp(port));
        Received refused = read_until_closed(third.fd);
        CHECK(refused.closed);
        CHECK(refused.data.empty());
    }
    Received cut = read_until_closed(slow.fd);
    CHECK(cut.closed);
    CHECK(cut.data.empty());
    CHECK(Clock::now() - t0 >= 300ms - 50ms); // not before its timeout (less the time to connect)

    boost::asio::post(io, [&] { server.close(); });
    runner.join();
}
