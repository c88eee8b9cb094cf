// The broker's small Asio parts against the real kernel: the notify socket,
// worker output logging and the notify=none readiness probe. Every wait ends
// on an event (with a 5 s limit so a failure fails instead of hanging).

#include "broker/log.hpp"
#include "broker/notify_socket.hpp"
#include "broker/readiness_probe.hpp"
#include "broker/worker_output.hpp"

#include <catch2/catch.hpp>
#include <systemd/sd-daemon.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/signal_set.hpp>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#include <utility>
#include <vector>

namespace {

using namespace std::chrono_literals;
using foreman::broker::NotifySocket;
using foreman::broker::ReadinessProbe;
using foreman::broker::WorkerOutput;
using foreman::protocol::NotifyMessage;
using foreman::spawn::unique_fd;
using Clock = std::chrono::steady_clock;

constexpr auto test_limit = 5s;

/// A fresh directory, removed with everything in it at the end of the test.
struct TempDir {
    std::string path;
    TempDir() {
        std::string tmpl = "/tmp/foreman-io-XXXXXX";
        REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
        path = tmpl;
    }
    ~TempDir() {
        std::error_code ignored;
        std::filesystem::remove_all(path, ignored);
    }
    std::string operator/(const std::string& name) const { return path + "/" + name; }
};

/// Runs handlers one at a time until `done()` holds; false when it did not
/// within the limit or when the io_context ran out of work first.
template <class Pred>
bool run_until(boost::asio::io_context& io, Pred done, Clock::duration limit = test_limit) {
    auto deadline = Clock::now() + limit;
    while (!done()) {
        auto now = Clock::now();
        if (now >= deadline) return false;
        if (io.stopped()) io.restart();
        if (io.run_one_for(deadline - now) == 0 && io.stopped()) return done(); // out of work
    }
    return true;
}

/// Runs until the io_context has no work left (within the limit).
bool run_to_completion(boost::asio::io_context& io, Clock::duration limit = test_limit) {
    io.restart();
    io.run_for(limit);
    return io.stopped();
}

int count_open_fds() {
    int n = 0;
    DIR* d = ::opendir("/proc/self/fd");
    REQUIRE(d != nullptr);
    while (dirent* e = ::readdir(d))
        if (e->d_name[0] != '.') ++n;
    ::closedir(d);
    return n - 1; // the directory's own descriptor
}

/// The descriptors above stderr that would survive an exec.
std::vector<int> inheritable_fds() {
    std::vector<int> fds;
    DIR* d = ::opendir("/proc/self/fd");
    REQUIRE(d != nullptr);
    int own = ::dirfd(d);
    while (dirent* e = ::readdir(d)) {
        if (e->d_name[0] == '.') continue;
        int fd = std::atoi(e->d_name);
        if (fd <= 2 || fd == own) continue;
        int flags = ::fcntl(fd, F_GETFD);
        if (flags >= 0 && !(flags & FD_CLOEXEC)) fds.push_back(fd);
    }
    ::closedir(d);
    return fds;
}

/// Sends one datagram to `path`, with `fds` as SCM_RIGHTS when given;
/// false when it could not. No Catch assertion: senders run on threads.
bool try_send_datagram(const std::string& path, std::string_view data, const std::vector<int>& fds = {}) {
    unique_fd s(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!s) return false;
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    iovec iov{const_cast<char*>(data.data()), data.size()};
    msghdr msg{};
    msg.msg_name = &addr;
    msg.msg_namelen = sizeof addr;
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    std::vector<char> control(CMSG_SPACE(sizeof(int) * fds.size()));
    if (!fds.empty()) {
        msg.msg_control = control.data();
        msg.msg_controllen = control.size();
        cmsghdr* c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
        std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
    }
    return ::sendmsg(s.get(), &msg, 0) == static_cast<ssize_t>(data.size());
}

void send_datagram(const std::string& path, std::string_view data, const std::vector<int>& fds = {}) {
    REQUIRE(try_send_datagram(path, data, fds));
}

/// Sends to a socket that may be gone; true when it was still there.
bool send_datagram_may_fail(const std::string& path) {
    unique_fd s(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    return ::sendto(s.get(), "READY=1", 7, 0, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 7;
}

struct Received {
    pid_t pid;
    NotifyMessage message;
};

/// Waits for `pid` to exit (SIGCHLD on the io_context, so handlers keep
/// running meanwhile) and returns its wait status.
int wait_child(boost::asio::io_context& io, boost::asio::signal_set& sigchld, pid_t pid) {
    int status = -1;
    bool reaped = false;
    auto reap = [&] {
        if (!reaped && ::waitpid(pid, &status, WNOHANG) == pid) reaped = true;
        return reaped;
    };
    std::function<void()> arm = [&] {
        sigchld.async_wait([&](const boost::system::error_code& ec, int) {
            if (!ec && !reap()) arm();
        });
    };
    if (!reap()) {
        arm();
        if (!run_until(io, reap)) {
            ::kill(pid, SIGKILL);
            ::waitpid(pid, &status, 0);
            FAIL("child " << pid << " did not exit in time");
        }
        sigchld.cancel();
    }
    return status;
}

/// Replaces fd 2 by a file for the test's duration, so log lines can be read.
class StderrCapture {
public:
    explicit StderrCapture(const std::string& file) : file_(file) {
        unique_fd f(::open(file.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
        REQUIRE(f);
        saved_ = unique_fd(::fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3));
        REQUIRE(saved_);
        REQUIRE(::dup2(f.get(), STDERR_FILENO) == STDERR_FILENO);
    }
    ~StderrCapture() { restore(); }
    void restore() {
        if (saved_) ::dup2(saved_.get(), STDERR_FILENO);
        saved_.reset();
    }
    std::string text() const {
        std::ifstream in(file_);
        std::stringstream s;
        s << in.rdbuf();
        return s.str();
    }

private:
    std::string file_;
    unique_fd saved_;
};

/// Sets the log level for one test.
struct LogLevelScope {
    foreman::broker::LogLevel old = foreman::broker::log_level();
    explicit LogLevelScope(foreman::broker::LogLevel level) { foreman::broker::set_log_level(level); }
    ~LogLevelScope() { foreman::broker::set_log_level(old); }
};

} // namespace

// ---- NotifySocket ------------------------------------------------------------------

/// What a NotifySocket handed over (on its own thread), waited for here.
struct Inbox {
    std::mutex mu;
    std::condition_variable cv;
    std::vector<Received> got;

    NotifySocket::Handler handler() {
        return [this](const std::vector<NotifySocket::Datagram>& batch) {
            std::lock_guard lock(mu);
            for (auto& d : batch) got.push_back({d.pid, d.message});
            cv.notify_all();
        };
    }
    /// Waits for `n` datagrams (at most test_limit); a copy of all so far.
    std::vector<Received> wait(std::size_t n) {
        std::unique_lock lock(mu);
        cv.wait_for(lock, test_limit, [&] { return got.size() >= n; });
        return got;
    }
};

TEST_CASE("a datagram's sender pid comes from its credentials", "[notify]") {
    TempDir dir;
    boost::asio::io_context io;
    boost::asio::signal_set sigchld(io, SIGCHLD);
    Inbox inbox;
    NotifySocket notify(dir / "notify.sock", inbox.handler());
    std::vector<Received> got;

    pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        // The datagram says nothing about its sender: the kernel does.
        int s = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        std::strcpy(addr.sun_path, notify.path().c_str());
        const char text[] = "READY=1\nSTATUS=hi";
        bool ok = ::sendto(s, text, sizeof text - 1, 0, reinterpret_cast<sockaddr*>(&addr), sizeof addr) ==
                  static_cast<ssize_t>(sizeof text - 1);
        ::_exit(ok ? 0 : 1);
    }
    REQUIRE((got = inbox.wait(1)).size() >= 1);
    int status = wait_child(io, sigchld, child);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    REQUIRE(got.size() == 1);
    CHECK(got[0].pid == child);
    CHECK(got[0].message.ready);
    CHECK_FALSE(got[0].message.watchdog);
    CHECK(got[0].message.status == std::optional<std::string>("hi"));
}

TEST_CASE("several keys in one datagram", "[notify]") {
    TempDir dir;
    boost::asio::io_context io;
    Inbox inbox;
    NotifySocket notify(dir / "notify.sock", inbox.handler());
    std::vector<Received> got;

    send_datagram(notify.path(), "WATCHDOG=1\nSTATUS=busy: 3 jobs\nSTOPPING=1\nMAINPID=1\n");
    send_datagram(notify.path(), "READY=1\n");
    REQUIRE((got = inbox.wait(2)).size() >= 2);
    CHECK(got[0].pid == ::getpid());
    CHECK_FALSE(got[0].message.ready);
    CHECK(got[0].message.watchdog);
    CHECK(got[0].message.stopping);
    CHECK(got[0].message.status == std::optional<std::string>("busy: 3 jobs"));
    CHECK(got[1].pid == ::getpid());
    CHECK(got[1].message.ready);
    CHECK_FALSE(got[1].message.status);
}

TEST_CASE("malformed datagrams are ignored", "[notify]") {
    TempDir dir;
    LogLevelScope debug(foreman::broker::LogLevel::debug);
    boost::asio::io_context io;
    Inbox inbox;
    NotifySocket notify(dir / "notify.sock", inbox.handler());
    std::vector<Received> got;

    StderrCapture err(dir / "stderr");
    send_datagram(notify.path(), "");
    send_datagram(notify.path(), "READY");
    send_datagram(notify.path(), "=1");
    send_datagram(notify.path(), std::string_view("READY=1\0STATUS=x", 16));
    // Longer than a notify datagram may be: dropped whole, not cut.
    send_datagram(notify.path(), "READY=1\nSTATUS=" + std::string(NotifySocket::max_datagram, 'x'));
    send_datagram(notify.path(), "WATCHDOG=1");
    // Datagrams arrive in order: once the good one is handled, so were the rest.
    REQUIRE((got = inbox.wait(1)).size() >= 1);
    err.restore();

    REQUIRE(got.size() == 1);
    CHECK(got[0].message.watchdog);
    CHECK_FALSE(got[0].message.ready);
    std::string log = err.text();
    std::string pid = std::to_string(::getpid());
    CHECK_THAT(log, Catch::Contains("malformed datagram from pid " + pid + ": empty datagram"));
    CHECK_THAT(log, Catch::Contains("malformed datagram from pid " + pid + ": not KEY=VALUE: 'READY'"));
    CHECK_THAT(log, Catch::Contains("malformed datagram from pid " + pid + ": not KEY=VALUE: '=1'"));
    CHECK_THAT(log, Catch::Contains("malformed datagram from pid " + pid + ": NUL byte in datagram"));
    CHECK_THAT(log, Catch::Contains("truncated datagram from pid " + pid));
}

TEST_CASE("descriptors passed with a datagram are closed", "[notify]") {
    TempDir dir;
    boost::asio::io_context io;
    Inbox inbox;
    NotifySocket notify(dir / "notify.sock", inbox.handler());
    std::vector<Received> got;
    int before = count_open_fds();

    int p[2];
    REQUIRE(::pipe2(p, O_CLOEXEC | O_NONBLOCK) == 0);
    unique_fd read_end(p[0]);
    {
        unique_fd write_end(p[1]);
        unique_fd copy(::fcntl(write_end.get(), F_DUPFD_CLOEXEC, 0));
        send_datagram(notify.path(), "READY=1", {write_end.get(), copy.get()});
        // More than the notify socket has room for: the datagram is dropped
        // (MSG_CTRUNC), and still no descriptor may stay open.
        std::vector<int> many(40, write_end.get());
        send_datagram(notify.path(), "STATUS=many", many);
        send_datagram(notify.path(), "WATCHDOG=1");
    }
    REQUIRE((got = inbox.wait(2)).size() >= 2);
    CHECK(got[0].message.ready);
    CHECK(got[1].message.watchdog);
    // End of file: no copy of the write end is left, in this process either.
    char c;
    CHECK(::read(read_end.get(), &c, 1) == 0);
    read_end.reset();
    CHECK(count_open_fds() == before);
}

TEST_CASE("libsystemd's sd_notify reaches the notify socket", "[notify]") {
    TempDir dir;
    boost::asio::io_context io;
    boost::asio::signal_set sigchld(io, SIGCHLD);
    Inbox inbox;
    NotifySocket notify(dir / "notify.sock", inbox.handler());
    std::vector<Received> got;

    pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        ::setenv("NOTIFY_SOCKET", notify.path().c_str(), 1);
        if (sd_notify(0, "READY=1\nSTATUS=up") <= 0) ::_exit(1);
        // BARRIER=1 carries a pipe's write end and waits until the receiver
        // closes it: this returns only if the notify socket closes passed fds.
        if (sd_notify_barrier(0, 5'000'000) < 0) ::_exit(2);
        ::_exit(0);
    }
    int status = wait_child(io, sigchld, child);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    REQUIRE((got = inbox.wait(2)).size() >= 2);
    REQUIRE(got.size() == 2);
    CHECK(got[0].pid == child);
    CHECK(got[0].message.ready);
    CHECK(got[0].message.status == std::optional<std::string>("up"));
    CHECK(got[1].pid == child); // the barrier: a valid datagram with no key foreman uses
    CHECK_FALSE(got[1].message.ready);
}

TEST_CASE("notify handlers never overlap, every datagram arrives, and close() stops them", "[notify]") {
    TempDir dir;
    std::mutex mu;
    std::condition_variable cv;
    int handled = 0;
    std::atomic<int> inside{0};
    std::atomic<bool> overlapped{false};
    NotifySocket notify(dir / "notify.sock", [&](const std::vector<NotifySocket::Datagram>& batch) {
        if (inside.fetch_add(1) != 0) overlapped = true;
        {
            std::lock_guard lock(mu);
            handled += static_cast<int>(batch.size());
        }
        cv.notify_all();
        inside.fetch_sub(1);
    });
    // Senders on several threads at once.
    constexpr int per_thread = 100;
    std::atomic<int> unsent{0};
    std::vector<std::thread> senders;
    for (int t = 0; t < 3; ++t)
        senders.emplace_back([&] {
            for (int i = 0; i < per_thread; ++i) unsent += !try_send_datagram(notify.path(), "WATCHDOG=1");
        });
    for (auto& t : senders) t.join();
    REQUIRE(unsent == 0);
    bool all;
    {
        std::unique_lock lock(mu);
        all = cv.wait_for(lock, test_limit, [&] { return handled == 3 * per_thread; });
    }
    notify.close();
    CHECK_FALSE(send_datagram_may_fail(notify.path())); // the file is gone
    CHECK(all);
    CHECK_FALSE(overlapped);
    std::lock_guard lock(mu);
    CHECK(handled == 3 * per_thread);
}

TEST_CASE("the notify socket replaces a stale socket, is open to all, and close() removes it", "[notify]") {
    TempDir dir;
    std::string path = dir / "notify.sock";
    {
        // What a killed broker leaves behind.
        unique_fd stale(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        std::strcpy(addr.sun_path, path.c_str());
        REQUIRE(::bind(stale.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    }
    auto inherited = inheritable_fds(); // whatever the test runner passed us
    NotifySocket notify(path, [](const std::vector<NotifySocket::Datagram>&) {});
    CHECK(notify.path() == path);
    struct stat st {};
    REQUIRE(::stat(path.c_str(), &st) == 0);
    CHECK(S_ISSOCK(st.st_mode));
    CHECK((st.st_mode & 07777) == 0666);
    CHECK(inheritable_fds() == inherited);
    notify.close();
    CHECK(::access(path.c_str(), F_OK) != 0);
    notify.close(); // idempotent
}

TEST_CASE("a notify socket that cannot be bound throws a clear error", "[notify]") {
    TempDir dir;
    auto ignore = [](const std::vector<NotifySocket::Datagram>&) {};
    CHECK_THROWS_WITH(NotifySocket(dir / "missing/notify.sock", ignore),
                      Catch::Contains("cannot bind " + dir / "missing/notify.sock"));
    CHECK_THROWS_WITH(NotifySocket(dir / std::string(120, 'n'), ignore), Catch::Contains("longer than"));
    std::ofstream(dir / "file") << "not a socket";
    CHECK_THROWS_WITH(NotifySocket(dir / "file", ignore), Catch::Contains("is not a socket"));
    CHECK(std::filesystem::exists(dir / "file"));
}

// ---- WorkerOutput ------------------------------------------------------------------

TEST_CASE("worker output is logged line by line with protocol and pid", "[output]") {
    TempDir dir;
    boost::asio::io_context io;
    int p[2];
    REQUIRE(::pipe2(p, O_CLOEXEC) == 0);
    unique_fd write_end(p[1]);
    std::string long_line(2 * WorkerOutput::max_line + 100, 'x');
    std::string exact_line(WorkerOutput::max_line, 'y');
    std::string input = "hello\nworld\n\n" + long_line + "\n" + exact_line + "\ntail without newline";
    REQUIRE(input.size() < 60000); // fits the pipe: written before anything reads
    REQUIRE(::write(write_end.get(), input.data(), input.size()) == static_cast<ssize_t>(input.size()));
    write_end.reset();

    StderrCapture err(dir / "stderr");
    std::weak_ptr<WorkerOutput> output = WorkerOutput::start(io, unique_fd(p[0]), "echo", 123);
    // It keeps itself alive until end of file.
    REQUIRE(run_until(io, [&] { return output.expired(); }));
    err.restore();

    std::string expected = "echo[123]: hello\n"
                           "echo[123]: world\n"
                           "echo[123]: \n"
                           "echo[123]: " + std::string(WorkerOutput::max_line, 'x') + "\n"
                           "echo[123]: " + std::string(WorkerOutput::max_line, 'x') + "\n"
                           "echo[123]: " + std::string(100, 'x') + "\n"
                           "echo[123]: " + exact_line + "\n"
                           "echo[123]: tail without newline\n";
    CHECK(err.text() == expected);
}

TEST_CASE("worker output stops at close() and logs the unterminated rest", "[output]") {
    TempDir dir;
    boost::asio::io_context io;
    int p[2];
    REQUIRE(::pipe2(p, O_CLOEXEC) == 0);
    unique_fd write_end(p[1]);
    std::string input = "first\npartial";
    REQUIRE(::write(write_end.get(), input.data(), input.size()) == static_cast<ssize_t>(input.size()));

    StderrCapture err(dir / "stderr");
    auto output = WorkerOutput::start(io, unique_fd(p[0]), "web", 7);
    std::weak_ptr<WorkerOutput> weak = output;
    CHECK((::fcntl(p[0], F_GETFL) & O_NONBLOCK) != 0);
    // The write end stays open: only close() can end this reader.
    REQUIRE(run_until(io, [&] { return err.text() == "web[7]: first\n"; }));
    output->close();
    output->close();
    output.reset();
    REQUIRE(run_until(io, [&] { return weak.expired(); }));
    err.restore();
    CHECK(err.text() == "web[7]: first\nweb[7]: partial\n");
}

// ---- ReadinessProbe ----------------------------------------------------------------

namespace {

unique_fd unix_stream_socket(const std::string& path, bool listening) {
    unique_fd s(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    REQUIRE(s);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strcpy(addr.sun_path, path.c_str());
    REQUIRE(::bind(s.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    if (listening) REQUIRE(::listen(s.get(), 16) == 0);
    return s;
}

struct ProbeResult {
    int calls = 0;
    bool ready = false;
    auto callback() {
        return [this](bool r) {
            ++calls;
            ready = r;
        };
    }
};

} // namespace

TEST_CASE("readiness probe succeeds once something listens", "[probe]") {
    TempDir dir;
    boost::asio::io_context io;
    std::string path = dir / "worker.sock";
    ProbeResult result;
    auto probe = ReadinessProbe::start(io, path, Clock::now() + test_limit, result.callback());
    CHECK(result.calls == 0); // never from inside start()

    // A few attempts find nothing (ENOENT), then a bound socket that does not
    // listen yet (ECONNREFUSED), then a listener.
    for (int i = 0; i < 3; ++i) REQUIRE(io.run_one_for(test_limit) == 1);
    CHECK(result.calls == 0);
    unique_fd bound = unix_stream_socket(path, false);
    for (int i = 0; i < 3; ++i) REQUIRE(io.run_one_for(test_limit) == 1);
    CHECK(result.calls == 0);
    bound.reset();
    ::unlink(path.c_str());
    unique_fd listener = unix_stream_socket(path, true);

    REQUIRE(run_until(io, [&] { return result.calls > 0; }));
    CHECK(result.ready);
    // The probe connected, and hung up at once.
    unique_fd conn(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
    REQUIRE(conn);
    char c;
    CHECK(::read(conn.get(), &c, 1) == 0);
    probe->cancel(); // too late: done was called already
    CHECK(run_to_completion(io));
    CHECK(result.calls == 1);
}

TEST_CASE("readiness probe reports false at its deadline", "[probe]") {
    TempDir dir;
    boost::asio::io_context io;
    bool bound_not_listening = GENERATE(false, true);
    std::string path = dir / "worker.sock";
    unique_fd bound;
    if (bound_not_listening) bound = unix_stream_socket(path, false); // ECONNREFUSED, not ENOENT
    ProbeResult result;
    auto start = Clock::now();
    ReadinessProbe::start(io, path, start + 50ms, result.callback());
    REQUIRE(run_to_completion(io));
    CHECK(Clock::now() - start >= 50ms);
    CHECK(result.calls == 1);
    CHECK_FALSE(result.ready);
}

TEST_CASE("a cancelled probe reports false once", "[probe]") {
    TempDir dir;
    boost::asio::io_context io;
    ProbeResult result;
    auto start = Clock::now();
    auto probe = ReadinessProbe::start(io, dir / "worker.sock", start + 60s, result.callback());
    for (int i = 0; i < 3; ++i) REQUIRE(io.run_one_for(test_limit) == 1);
    probe->cancel();
    probe->cancel();
    REQUIRE(run_to_completion(io)); // the timer is gone too, long before 60 s
    CHECK(result.calls == 1);
    CHECK_FALSE(result.ready);
    CHECK(Clock::now() - start < test_limit);
}

TEST_CASE("a probe that cannot ever connect reports false at once", "[probe]") {
    TempDir dir;
    boost::asio::io_context io;
    std::ofstream(dir / "file") << "not a directory";
    ProbeResult result;
    auto start = Clock::now();
    ReadinessProbe::start(io, dir / "file/worker.sock", start + 60s, result.callback()); // ENOTDIR
    {
        StderrCapture err(dir / "stderr");
        REQUIRE(run_to_completion(io));
        err.restore();
        CHECK_THAT(err.text(), Catch::Contains("readiness probe of " + dir / "file/worker.sock"));
    }
    CHECK(result.calls == 1);
    CHECK_FALSE(result.ready);
}
