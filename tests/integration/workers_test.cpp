// The broker's process side with real processes: the project's echo worker,
// this test binary re-run as a worker that misbehaves on cue, a C worker on
// libsystemd, and programs no one here wrote (socat, redis-server).
// Workers that crash-loop, ignore SIGTERM or are stopped are faults_test.cpp's.

#include "broker_harness.hpp"

#include <catch2/catch.hpp>

#include <csignal>
#include <fstream>
#include <grp.h>
#include <pwd.h>
#include <set>
#include <sstream>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace foreman;
using namespace foreman::test;
using lease::WorkerState;
using protocol::EndReason;
using protocol::FailCode;

namespace {

/// Waits for a file the worker writes whole (rename), by polling: a file
/// appearing is not an event the test can wait on otherwise.
std::string wait_file(const std::string& path, std::chrono::milliseconds timeout = 10s) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
        std::ifstream f(path);
        if (f) {
            std::stringstream ss;
            ss << f.rdbuf();
            return ss.str();
        }
        ::usleep(2000);
    }
    return {};
}

/// No zombie outlives a second: `pid` is reaped (its /proc entry gone) within 1 s.
bool reaped_within_a_second(int pid) {
    auto deadline = std::chrono::steady_clock::now() + 1s;
    while (std::chrono::steady_clock::now() < deadline) {
        if (::kill(pid, 0) < 0 && errno == ESRCH) return true;
        ::usleep(1000);
    }
    return false;
}

bool idle_workers(const lease::Snapshot& s, const std::string& pool, std::size_t n) {
    return count_state(s, pool, WorkerState::idle) >= n;
}


} // namespace

TEST_CASE("a worker gets the contract's argv, environment, session and only fds 0-3", "[workers]") {
    BrokerHarness h(R"(
[pool.dumper]
path = {self}
args = worker dump {socket}.info {socket} {protocol} {worker}
notify = foreman
heartbeat_timeout_ms = 5000
min_idle = 1
)");
    REQUIRE(h.wait_for([](auto& s) { return idle_workers(s, "dumper", 1); }));
    auto w = all_workers(h.snapshot()).at(0);
    std::string socket = h.runtime_dir() + "/dumper/" + std::to_string(w.id) + ".sock";
    std::string info = wait_file(socket + ".info");
    REQUIRE_FALSE(info.empty());
    std::string pid = std::to_string(w.pid);
    CHECK(info.find("pid=" + pid + "\n") != std::string::npos);
    CHECK(info.find("sid=" + pid + "\n") != std::string::npos); // setsid: its own session
    CHECK(info.find("argv4=" + socket + "\n") != std::string::npos);
    CHECK(info.find("argv5=dumper\n") != std::string::npos);
    CHECK(info.find("argv6=" + std::to_string(w.id) + "\n") != std::string::npos);
    CHECK(info.find("env FOREMAN_PROTOCOL=dumper\n") != std::string::npos);
    CHECK(info.find("env FOREMAN_VERSION=1000\n") != std::string::npos);
    CHECK(info.find("env FOREMAN_WORKER_ID=" + std::to_string(w.id) + "\n") != std::string::npos);
    CHECK(info.find("env FOREMAN_SOCKET=" + socket + "\n") != std::string::npos);
    CHECK(info.find("env LISTEN_FDS=1\n") != std::string::npos);
    CHECK(info.find("env LISTEN_PID=" + pid + "\n") != std::string::npos);
    CHECK(info.find("env LISTEN_FDNAMES=dumper\n") != std::string::npos);
    CHECK(info.find("env NOTIFY_SOCKET=" + h.runtime_dir() + "/notify.sock\n") != std::string::npos);
    CHECK(info.find("env WATCHDOG_USEC=5000000\n") != std::string::npos);
    CHECK(info.find("env WATCHDOG_PID=" + pid + "\n") != std::string::npos);
    CHECK(info.find("env FOREMAN_USER=") == std::string::npos); // not a per_user pool

    // sd_notify() holds a socket of its own for a moment: look again until
    // the worker sits in accept() with only what it was started with.
    auto fds = open_fds(w.pid);
    for (int i = 0; i < 500 && fds.size() != 4; ++i) {
        ::usleep(2000);
        fds = open_fds(w.pid);
    }
    INFO("fds: " << [&] { std::string t; for (auto& [n, p] : fds) t += std::to_string(n) + "=" + p + " "; return t; }());
    CHECK(fds.size() == 4);
    CHECK(fds[0] == "/dev/null");
    CHECK(fds[1].rfind("pipe:", 0) == 0);
    CHECK(fds[2] == fds[1]);
    CHECK(fds[3].rfind("socket:", 0) == 0);
}

TEST_CASE("the project's echo worker is leased and echoes through the handed-over connection",
          "[workers]") {
    BrokerHarness h("[pool.echo]\npath = " + echo_worker() + "\nnotify = foreman\nheartbeat_timeout_ms = 5000\n");
    auto c = h.client();
    auto g = h.lease(*c, "echo");
    CHECK(echo_through(g.conn.get(), "hello foreman\n") == "hello foreman\n");
    g.conn.reset();
    // Its READY=1 after the connection ends the lease (notify=foreman).
    CHECK(c->wait_expired(g.lease) == EndReason::worker_ready);
    REQUIRE(h.wait_for([](auto& s) { return idle_workers(s, "echo", 1); }));
}

TEST_CASE("a missing executable is a spawn failure carrying ENOENT", "[workers]") {
    TempDir bin;
    std::string path = bin.path() + "/worker";
    std::ofstream(path) << "#!/bin/sh\nexit 0\n";
    ::chmod(path.c_str(), 0755);
    BrokerHarness h("[pool.gone]\npath = " + path + "\n");
    ::unlink(path.c_str()); // the config was valid; the file goes before the spawn
    auto c = h.client();
    auto r = c->wait_rejected(h.ask(*c, "gone", {}, 2000ms));
    REQUIRE(r.has_value());
    CHECK(r->code == FailCode::spawn_failed);
    CHECK_THAT(r->text, Catch::Contains("No such file or directory"));
    auto s = h.snapshot();
    CHECK(s.pools.at(0).spawn_failures >= 1);
}

TEST_CASE("a non-executable file is a spawn failure carrying EACCES", "[workers]") {
    TempDir bin;
    std::string path = bin.path() + "/worker";
    std::ofstream(path) << "#!/bin/sh\nexit 0\n";
    ::chmod(path.c_str(), 0755);
    BrokerHarness h("[pool.noexec]\npath = " + path + "\n");
    ::chmod(path.c_str(), 0644);
    auto c = h.client();
    auto r = c->wait_rejected(h.ask(*c, "noexec", {}, 2000ms));
    REQUIRE(r.has_value());
    CHECK(r->code == FailCode::spawn_failed);
    CHECK_THAT(r->text, Catch::Contains("Permission denied"));
}

TEST_CASE("a worker that never becomes ready is killed after start_timeout and reaped", "[workers]") {
    BrokerHarness h(R"(
[pool.slow]
path = {self}
args = worker never-ready
notify = foreman
start_timeout_ms = 200
kill_grace_ms = 200
min_idle = 1
)");
    int pid = 0;
    REQUIRE(h.wait_for([&](auto& s) {
        auto ws = all_workers(s);
        if (!ws.empty() && ws[0].pid > 0) pid = ws[0].pid;
        return pid > 0;
    }));
    REQUIRE(wait_pid_gone(pid, 5s));
    CHECK(reaped_within_a_second(pid));
    REQUIRE(h.wait_for([](auto& s) { return s.pools.at(0).spawn_failures >= 1; }));
}

TEST_CASE("a leased worker that stops heartbeating loses its lease with worker-exit and is killed",
          "[workers]") {
    BrokerHarness h(R"(
[pool.hung]
path = {self}
args = worker no-heartbeat
notify = systemd
heartbeat_timeout_ms = 200
kill_grace_ms = 200
)");
    auto c = h.client();
    auto g = h.lease(*c, "hung");
    CHECK(c->wait_expired(g.lease, 5s) == EndReason::worker_exit);
    REQUIRE(wait_pid_gone(g.pid, 5s));
    CHECK(reaped_within_a_second(g.pid));
}

TEST_CASE("a worker that heartbeats keeps its lease past the heartbeat timeout", "[workers]") {
    BrokerHarness h(R"(
[pool.alive]
path = {self}
args = worker heartbeat
notify = foreman
heartbeat_timeout_ms = 200
lease_ttl_ms = 300
)");
    auto c = h.client();
    auto g = h.lease(*c, "alive");
    // Serve for longer than both the heartbeat timeout and the ttl: the
    // worker's WATCHDOG=1 renews the lease.
    auto until = std::chrono::steady_clock::now() + 700ms;
    while (std::chrono::steady_clock::now() < until) {
        CHECK(echo_through(g.conn.get(), "x") == "x");
        ::usleep(20000);
    }
    CHECK_FALSE(c->wait_expired(g.lease, 0ms).has_value());
    CHECK(count_state(h.snapshot(), "alive", WorkerState::leased) == 1);
}

TEST_CASE("a worker that exits mid-lease ends its lease with worker-exit", "[workers]") {
    BrokerHarness h("[pool.quitter]\npath = {self}\nargs = worker exit-mid-lease\nnotify = foreman\n");
    auto c = h.client();
    auto g = h.lease(*c, "quitter");
    CHECK(c->wait_expired(g.lease, 5s) == EndReason::worker_exit);
    CHECK(reaped_within_a_second(g.pid));
}

TEST_CASE("a retired worker's grandchildren die with it", "[workers]") {
    BrokerHarness h(R"(
[pool.family]
path = {self}
args = worker grandchild
notify = foreman
kill_grace_ms = 300
min_idle = 1
)");
    REQUIRE(h.wait_for([](auto& s) { return idle_workers(s, "family", 1); }));
    int pid = all_workers(h.snapshot()).at(0).pid;
    std::ifstream children("/proc/" + std::to_string(pid) + "/task/" + std::to_string(pid) + "/children");
    int grandchild = 0;
    children >> grandchild;
    REQUIRE(grandchild > 0);
    REQUIRE(h.broker().unregister_pool("family") == broker::PoolResult::ok);
    REQUIRE(wait_pid_gone(pid, 5s));
    // The grandchild ignores SIGTERM and is not the broker's child: the group
    // SIGKILL is what ends it.
    CHECK(wait_pid_gone(grandchild, 5s));
}

TEST_CASE("broker stop retires every worker, removes the sockets, within kill_grace + 1 s", "[workers]") {
    BrokerHarness h(R"(
[pool.stubborn]
path = {self}
args = worker ignore-term
notify = foreman
kill_grace_ms = 300
min_idle = 2
)");
    REQUIRE(h.wait_for([](auto& s) { return idle_workers(s, "stubborn", 2); }));
    std::vector<int> pids;
    for (auto& w : all_workers(h.snapshot())) pids.push_back(w.pid);
    auto took = h.stop();
    CHECK(took < 1300ms);
    for (int pid : pids) {
        CHECK(wait_pid_gone(pid, 0ms));
        CHECK_FALSE(is_zombie(pid));
    }
    struct stat st {};
    CHECK(::stat((h.runtime_dir() + "/notify.sock").c_str(), &st) != 0);
    CHECK(::stat((h.runtime_dir() + "/stubborn").c_str(), &st) != 0); // its socket folder is gone
}

TEST_CASE("libsystemd's sd_notify from a C worker makes it ready and keeps its lease", "[workers]") {
    BrokerHarness h("[pool.cworker]\npath = " + std::string(FOREMAN_TEST_BIN_DIR) +
                    "/sd_worker\nnotify = foreman\nheartbeat_timeout_ms = 2000\n");
    auto c = h.client();
    auto g = h.lease(*c, "cworker");
    CHECK(echo_through(g.conn.get(), "from C\n") == "from C\n");
    REQUIRE(h.wait_for([](auto& s) {
        auto ws = all_workers(s);
        return !ws.empty() && ws[0].status == "serving";
    }));
    g.conn.reset();
    CHECK(c->wait_expired(g.lease) == EndReason::worker_ready);
}

TEST_CASE("socat in listen=path, notify=none is ready once its socket accepts", "[workers][peers]") {
    BrokerHarness h(R"(
[pool.socat]
path = socat
args = UNIX-LISTEN:{socket},fork EXEC:cat
listen = path
notify = none
)");
    auto c = h.client();
    auto g = h.lease(*c, "socat");
    CHECK(echo_through(g.conn.get(), "through socat\n") == "through socat\n");
    CHECK(h.broker().release(g.lease, c->id, 0));
}

TEST_CASE("redis-server supervised by systemd notify is ready by its own READY=1", "[workers][peers]") {
    TempDir data;
    BrokerHarness h("[pool.redis]\npath = redis-server\nargs = --port 0 --unixsocket {socket} "
                    "--supervised systemd --save '' --appendonly no --dir " +
                    data.path() + "\nlisten = path\nnotify = systemd\n");
    auto c = h.client();
    auto g = h.lease(*c, "redis");
    CHECK(echo_through(g.conn.get(), "PING\r\n") == "+PONG\r\n");
    CHECK(h.broker().release(g.lease, c->id, 0));
}

TEST_CASE("run_as starts the worker as that user", "[workers][root]") {
    if (::geteuid() != 0) {
        WARN("not root: run_as is only used by a root broker");
        return;
    }
    BrokerHarness h(R"(
[pool.nobody]
path = {self}
args = worker echo
run_as = nobody
notify = none
min_idle = 1
)");
    REQUIRE(h.wait_for([](auto& s) { return idle_workers(s, "nobody", 1); }));
    int pid = all_workers(h.snapshot()).at(0).pid;
    // Real, effective, saved and file-system ids all dropped, and the
    // supplementary groups are nobody's, none of root's.
    auto ids = [&](const std::string& key) {
        std::ifstream status("/proc/" + std::to_string(pid) + "/status");
        std::string line;
        std::vector<long> all;
        while (std::getline(status, line)) {
            if (line.rfind(key + ":", 0) != 0) continue;
            std::istringstream in(line.substr(key.size() + 1));
            for (long id; in >> id;) all.push_back(id);
        }
        return all;
    };
    passwd* pw = ::getpwnam("nobody");
    REQUIRE(pw != nullptr);
    CHECK(ids("Uid") == std::vector<long>(4, static_cast<long>(pw->pw_uid)));
    CHECK(ids("Gid") == std::vector<long>(4, static_cast<long>(pw->pw_gid)));
    int count = 64;
    std::vector<gid_t> expected(64);
    REQUIRE(::getgrouplist("nobody", pw->pw_gid, expected.data(), &count) >= 0);
    std::set<long> want(expected.begin(), expected.begin() + count);
    auto groups = ids("Groups");
    CHECK(std::set<long>(groups.begin(), groups.end()) == want);
    CHECK(want.count(0) == 0);
}
