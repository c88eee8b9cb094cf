// foreman under a service manager, without one: the test plays systemd's
// part by setting the variables systemd would (NOTIFY_SOCKET, WATCHDOG_USEC,
// WATCHDOG_PID, LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES, fd 3), binds the
// notify socket foreman reports to, and runs the real foreman binary. Also
// systemd's own tools where they are installed: systemd-socket-activate and
// `systemd-analyze verify` on etc/systemd's units. And SIGHUP's log lines,
// which the unit's ExecReload relies on.
//
// Waits are on events: a datagram, a reply, a pidfd. foreman's stderr and a
// worker's appearance in STATUS are polled under a deadline.

#include "broker_harness.hpp"
#include "foreman_process.hpp"

#include <boost/json.hpp>
#include <catch2/catch.hpp>

#include <algorithm>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <poll.h>
#include <regex>
#include <sstream>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

using namespace foreman::test;
using namespace std::chrono_literals;
using foreman::spawn::unique_fd;
using Clock = std::chrono::steady_clock;

namespace {

/// A limit on how long something may take (never a duration under test).
constexpr std::chrono::milliseconds patience = 10s * sanitizer_slowdown;

bool is_socket_file(const std::string& path) {
    struct stat st {};
    return ::lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode);
}

/// An executable on PATH, or "" (then the test says why it skips).
std::string find_program(const std::string& name) {
    const char* path = std::getenv("PATH");
    std::stringstream dirs(path ? path : "/usr/bin:/bin");
    std::string dir;
    while (std::getline(dirs, dir, ':'))
        if (!dir.empty() && ::access((dir + "/" + name).c_str(), X_OK) == 0) return dir + "/" + name;
    return {};
}

sockaddr_un unix_address(const std::string& path) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    REQUIRE(path.size() < sizeof addr.sun_path);
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    return addr;
}

/// A listening socket at `path`, as foreman.socket's ListenStream= makes one.
unique_fd listening_socket(const std::string& path) {
    unique_fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    REQUIRE(fd);
    sockaddr_un addr = unix_address(path);
    REQUIRE(::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    REQUIRE(::listen(fd.get(), 16) == 0);
    return fd;
}

/// "socket:[<inode>]", as /proc/<pid>/fd shows the socket `fd`.
std::string proc_name(int fd) {
    struct stat st {};
    REQUIRE(::fstat(fd, &st) == 0);
    return "socket:[" + std::to_string(st.st_ino) + "]";
}

bool holds(int pid, const std::string& name) {
    for (const auto& [fd, target] : open_fds(pid))
        if (target == name) return true;
    return false;
}

/// STATUS on the control socket at `path`, as a client asks (VERSION first),
/// within `timeout`: the JSON, or null when no answer came.
boost::json::value control_status(const std::string& path, std::chrono::milliseconds timeout = patience) {
    unique_fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    REQUIRE(fd);
    sockaddr_un addr = unix_address(path);
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0) return nullptr;
    timeval tv{static_cast<time_t>(timeout.count() / 1000), static_cast<suseconds_t>(timeout.count() % 1000 * 1000)};
    REQUIRE(::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0);
    const std::string request = "VERSION\tforeman\t1000\nSTATUS\tst\n";
    REQUIRE(::send(fd.get(), request.data(), request.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(request.size()));
    std::string in;
    char buf[4096];
    for (;;) {
        auto at = in.find("OK\tst\t");
        auto end = in.find('\n', at);
        if (at != std::string::npos && end != std::string::npos) return boost::json::parse(in.substr(at + 6, end - at - 6));
        ssize_t n = ::recv(fd.get(), buf, sizeof buf, 0);
        if (n <= 0) return nullptr;
        in.append(buf, static_cast<std::size_t>(n));
    }
}

/// The pid of an idle worker of `protocol` in a STATUS reply, or 0.
int idle_worker(const boost::json::value& status, const std::string& protocol) {
    if (!status.is_object()) return 0;
    for (const auto& pool : status.at("pools").as_array()) {
        if (pool.at("protocol").as_string() != protocol) continue;
        for (const auto& w : pool.at("workers").as_array())
            if (w.at("state").as_string() == "idle") return static_cast<int>(w.at("pid").to_number<int>());
    }
    return 0;
}

bool has_line(const std::string& text, const std::string& line) {
    std::stringstream lines(text);
    std::string l;
    while (std::getline(lines, l))
        if (l == line) return true;
    return false;
}

/// The service manager's end of sd_notify: a datagram socket with
/// SO_PASSCRED, so each message comes with its sender's pid.
class NotifyListener {
public:
    struct Message {
        pid_t pid = 0;
        std::string text;
        Clock::time_point at;
    };

    explicit NotifyListener(std::string path) : path_(std::move(path)) {
        fd_.reset(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
        REQUIRE(fd_);
        int on = 1;
        REQUIRE(::setsockopt(fd_.get(), SOL_SOCKET, SO_PASSCRED, &on, sizeof on) == 0);
        sockaddr_un addr = unix_address(path_);
        REQUIRE(::bind(fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    }

    const std::string& path() const { return path_; }
    /// Every message received so far, in order.
    const std::vector<Message>& seen() const { return seen_; }

    /// Receives until a message holds `line` as one of its lines; returns it.
    std::optional<Message> wait_for(const std::string& line, std::chrono::milliseconds timeout = patience) {
        auto deadline = Clock::now() + timeout;
        for (;;) {
            auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
            if (left < 0ms) return std::nullopt;
            pollfd p{fd_.get(), POLLIN, 0};
            if (::poll(&p, 1, static_cast<int>(left.count()) + 1) != 1) continue;
            char buf[4096];
            iovec iov{buf, sizeof buf};
            alignas(cmsghdr) char control[CMSG_SPACE(sizeof(ucred))];
            msghdr msg{};
            msg.msg_iov = &iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control;
            msg.msg_controllen = sizeof control;
            ssize_t n = ::recvmsg(fd_.get(), &msg, MSG_CMSG_CLOEXEC);
            REQUIRE(n >= 0);
            Message m{0, std::string(buf, static_cast<std::size_t>(n)), Clock::now()};
            for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
                if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS) {
                    ucred cred;
                    std::memcpy(&cred, CMSG_DATA(c), sizeof cred);
                    m.pid = cred.pid;
                }
            seen_.push_back(m);
            if (has_line(m.text, line)) return m;
        }
    }

    /// Every message so far, one per line (newlines shown as "|"): what a
    /// failed wait prints.
    std::string transcript() const {
        std::string out;
        for (const auto& m : seen_) {
            std::string text = m.text;
            std::replace(text.begin(), text.end(), '\n', '|');
            out += std::to_string(m.pid) + ": " + text + "\n";
        }
        return out;
    }

    /// How many messages received so far hold `line`.
    std::size_t count(const std::string& line) const {
        return static_cast<std::size_t>(
            std::count_if(seen_.begin(), seen_.end(), [&](const Message& m) { return has_line(m.text, line); }));
    }

private:
    std::string path_;
    unique_fd fd_;
    std::vector<Message> seen_;
};

/// How a service manager starts foreman: argv, the environment of the test
/// minus anything systemd would set plus `env`, and optionally a listening
/// socket as fd 3.
struct ServiceSpec {
    std::vector<std::string> argv; ///< argv[0] a path
    std::vector<std::string> env;  ///< "KEY=VALUE"
    /// Variables set to the started process's own pid (LISTEN_PID, WATCHDOG_PID),
    /// which only the child knows before it execs.
    std::vector<std::string> own_pid_vars;
    int listen_fd = -1; ///< becomes fd 3
};

/// A process started from a ServiceSpec, stdin and stdout on /dev/null,
/// stderr in a file of `dir`. Killed and reaped at the end if the test has
/// not reaped it.
class ServiceProcess {
public:
    ServiceProcess(const std::string& dir, ServiceSpec spec) : stderr_path_(dir + "/foreman.stderr") {
        std::vector<std::string> env;
        for (char** e = environ; *e; ++e) {
            std::string entry(*e);
            bool systemds = entry.rfind("NOTIFY_SOCKET=", 0) == 0 || entry.rfind("LISTEN_", 0) == 0 ||
                            entry.rfind("WATCHDOG_", 0) == 0;
            if (!systemds) env.push_back(entry);
        }
        env.insert(env.end(), spec.env.begin(), spec.env.end());
        // Room for the pid, which the child writes (only async-signal-safe code there).
        const std::size_t first_slot = env.size();
        for (const auto& name : spec.own_pid_vars) env.push_back(name + "=" + std::string(20, '\0'));
        std::vector<char*> argv, envp, pid_slots;
        for (auto& a : spec.argv) argv.push_back(a.data());
        argv.push_back(nullptr);
        for (auto& e : env) envp.push_back(e.data());
        envp.push_back(nullptr);
        for (std::size_t i = 0; i < spec.own_pid_vars.size(); ++i)
            pid_slots.push_back(env[first_slot + i].data() + spec.own_pid_vars[i].size() + 1);

        unique_fd null(::open("/dev/null", O_RDWR | O_CLOEXEC));
        unique_fd err(::open(stderr_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
        REQUIRE((null && err));
        pid_ = ::fork();
        REQUIRE(pid_ >= 0);
        if (pid_ == 0) {
            char digits[20];
            int n = 0;
            for (pid_t p = ::getpid(); p > 0; p /= 10) digits[n++] = static_cast<char>('0' + p % 10);
            for (char* slot : pid_slots)
                for (int i = 0; i < n; ++i) slot[i] = digits[n - 1 - i];
            sigset_t none;
            sigemptyset(&none);
            ::sigprocmask(SIG_SETMASK, &none, nullptr);
            if (::dup2(null.get(), 0) < 0 || ::dup2(null.get(), 1) < 0 || ::dup2(err.get(), 2) < 0) ::_exit(126);
            if (spec.listen_fd == 3) ::fcntl(3, F_SETFD, 0);
            else if (spec.listen_fd >= 0 && ::dup2(spec.listen_fd, 3) < 0) ::_exit(126);
            ::execve(argv[0], argv.data(), envp.data());
            ::_exit(127);
        }
    }

    ~ServiceProcess() {
        if (reaped_) return;
        ::kill(pid_, SIGKILL);
        int status;
        ::waitpid(pid_, &status, 0);
    }

    ServiceProcess(const ServiceProcess&) = delete;
    ServiceProcess& operator=(const ServiceProcess&) = delete;

    int pid() const { return pid_; }
    void signal(int sig) const { REQUIRE(::kill(pid_, sig) == 0); }
    std::string err() const { return read_file(stderr_path_); }

    /// Its exit status (WEXITSTATUS, or 128 + signal) once it exits within
    /// `timeout` (a pidfd says when), else nothing.
    std::optional<int> wait_exit(std::chrono::milliseconds timeout = patience) {
        if (!reaped_) {
            if (!wait_pid_gone(pid_, timeout)) return std::nullopt;
            int status = 0;
            REQUIRE(::waitpid(pid_, &status, 0) == pid_);
            reaped_ = true;
            exit_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        }
        return exit_;
    }

private:
    std::string stderr_path_;
    int pid_ = -1;
    bool reaped_ = false;
    int exit_ = -1;
};

/// A test's folder: a config with one pool of foreman-echo workers, the
/// runtime dir, the control socket, and the notify socket, where the test
/// listens in systemd's place.
struct Setup {
    TempDir tmp;
    std::string dir = tmp.path();
    std::string conf = dir + "/foreman.conf";
    std::string run = dir + "/run";
    std::string control = dir + "/control.sock";
    NotifyListener systemd{dir + "/notify"};

    explicit Setup(int min_idle = 0) {
        write_config("shutdown_grace_ms = 0\n" + echo_pool("echo", "min_idle = " + std::to_string(min_idle)));
    }

    std::string echo_pool(const std::string& name, const std::string& extra = {}) const {
        return "[pool." + name + "]\npath = " + std::string(FOREMAN_BIN_DIR) +
               "/foreman-echo\nnotify = foreman\nkill_grace_ms = 1000\n" + extra + "\n";
    }

    /// Writes the config file whole (rename), so a SIGHUP never reads half of it.
    void write_config(const std::string& text) const {
        std::ofstream(conf + ".tmp") << text;
        REQUIRE(std::rename((conf + ".tmp").c_str(), conf.c_str()) == 0);
    }

    std::vector<std::string> foreman_argv() const {
        return {foreman_bin(), "--config", conf, "--runtime_dir=" + run, "--control_socket=" + control};
    }

    /// foreman as systemd would start it with Type=notify, plus `env`.
    ServiceSpec service(std::vector<std::string> env = {}) const {
        env.push_back("NOTIFY_SOCKET=" + systemd.path());
        return {foreman_argv(), env, {}, -1};
    }
};

} // namespace

TEST_CASE("with NOTIFY_SOCKET foreman says READY=1 once its control socket answers, STOPPING=1 on SIGTERM",
          "[systemd]") {
    Setup s;
    ServiceProcess f(s.dir, s.service());

    auto ready = s.systemd.wait_for("READY=1");
    INFO("stderr:\n" << f.err());
    REQUIRE(ready);
    CHECK(ready->pid == f.pid());
    CHECK(has_line(ready->text, "STATUS=serving 1 pools on " + s.control));
    // Right when READY=1 arrives, a client is served, and the pool exists.
    auto status = control_status(s.control, 1s * sanitizer_slowdown);
    REQUIRE(status.is_object());
    CHECK(status.at("pools").as_array().at(0).at("protocol").as_string() == "echo");
    CHECK(s.systemd.seen().size() == 1); // nothing before READY=1

    f.signal(SIGTERM);
    auto stopping = s.systemd.wait_for("STOPPING=1");
    REQUIRE(stopping);
    CHECK(stopping->pid == f.pid());
    CHECK_THAT(stopping->text, Catch::Contains("STATUS=stopping: no new leases"));
    CHECK(f.wait_exit() == 0);
    CHECK(s.systemd.count("WATCHDOG=1") == 0); // WATCHDOG_USEC was not set
}

TEST_CASE("SIGHUP under NOTIFY_SOCKET: RELOADING=1, then READY=1 with the outcome, also for a bad file",
          "[systemd]") {
    Setup s;
    ServiceProcess f(s.dir, s.service());
    REQUIRE(s.systemd.wait_for("READY=1"));

    f.signal(SIGHUP);
    auto reloading = s.systemd.wait_for("RELOADING=1");
    REQUIRE(reloading);
    CHECK_THAT(reloading->text, Catch::Contains("MONOTONIC_USEC="));
    auto reloaded = s.systemd.wait_for("READY=1");
    REQUIRE(reloaded);
    CHECK(has_line(reloaded->text, "STATUS=SIGHUP: reloaded " + s.conf));

    s.write_config("bogus_key = 1\n");
    f.signal(SIGHUP);
    REQUIRE(s.systemd.wait_for("RELOADING=1"));
    auto refused = s.systemd.wait_for("READY=1");
    REQUIRE(refused);
    CHECK_THAT(refused->text, Catch::Contains("the old configuration stays in force"));

    f.signal(SIGTERM);
    CHECK(f.wait_exit() == 0);
}

TEST_CASE("with WATCHDOG_USEC foreman sends WATCHDOG=1 every half of it", "[systemd]") {
    Setup s;
    ServiceSpec spec = s.service({"WATCHDOG_USEC=200000"});
    SECTION("WATCHDOG_PID unset") {}
    SECTION("WATCHDOG_PID its own pid") { spec.own_pid_vars.push_back("WATCHDOG_PID"); }
    ServiceProcess f(s.dir, spec);

    std::vector<NotifyListener::Message> pings;
    for (int i = 0; i < 4; ++i) {
        auto ping = s.systemd.wait_for("WATCHDOG=1");
        INFO("stderr:\n" << f.err());
        REQUIRE(ping);
        CHECK(ping->pid == f.pid());
        pings.push_back(*ping);
    }
    // Every 100 ms: three intervals cannot pass in less than 300 ms (minus
    // the jitter of this test's own wake-ups).
    auto three = pings.back().at - pings.front().at;
    CHECK(three >= 250ms);
    CHECK(three < 300ms + patience);
    CHECK(s.systemd.count("READY=1") == 1);
    CHECK_THAT(f.err(), Catch::Contains("systemd watchdog: WATCHDOG=1 every 100 ms"));

    f.signal(SIGTERM);
    CHECK(f.wait_exit() == 0);
}

TEST_CASE("a WATCHDOG_PID of another process means systemd watches that one: no WATCHDOG=1", "[systemd]") {
    Setup s;
    ServiceProcess f(s.dir, s.service({"WATCHDOG_USEC=20000", "WATCHDOG_PID=" + std::to_string(::getpid())}));
    // A watched foreman pings before it says READY=1 (and then every 10 ms).
    REQUIRE(s.systemd.wait_for("READY=1"));
    f.signal(SIGTERM);
    REQUIRE(s.systemd.wait_for("STOPPING=1"));
    CHECK(f.wait_exit() == 0);
    CHECK(s.systemd.count("WATCHDOG=1") == 0);
    CHECK_THAT(f.err(), !Catch::Contains("systemd watchdog"));
}

TEST_CASE("a control socket passed with LISTEN_FDS=1 is served, kept at exit, and held by no worker",
          "[systemd]") {
    Setup s(1);
    unique_fd listener = listening_socket(s.control);
    const std::string listener_name = proc_name(listener.get());
    ServiceSpec spec = s.service({"LISTEN_FDS=1", "LISTEN_FDNAMES=foreman.socket"});
    spec.own_pid_vars = {"LISTEN_PID"};
    spec.listen_fd = listener.get();
    ServiceProcess f(s.dir, spec);
    REQUIRE(s.systemd.wait_for("READY=1"));
    INFO("stderr:\n" << f.err());
    CHECK_THAT(f.err(), Catch::Contains("serving the control socket " + s.control + " passed by the service manager"));

    int worker = 0;
    REQUIRE(poll_until([&] { return (worker = idle_worker(control_status(s.control), "echo")) > 0; }, patience));
    CHECK(holds(f.pid(), listener_name));
    CHECK_FALSE(holds(worker, listener_name));
    // The worker got its own activation variables, none of foreman's.
    std::string environ_text = read_file("/proc/" + std::to_string(worker) + "/environ");
    CHECK(environ_text.find(std::string("LISTEN_FDNAMES=echo") + std::string(1, '\0')) != std::string::npos);
    CHECK(environ_text.find("foreman.socket") == std::string::npos);

    f.signal(SIGTERM);
    CHECK(f.wait_exit() == 0);
    CHECK(wait_pid_gone(worker, patience));
    // The file is systemd's: still there, and still the socket systemd holds.
    CHECK(is_socket_file(s.control));
    unique_fd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr = unix_address(s.control);
    CHECK(::connect(probe.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
}

TEST_CASE("a passed socket that listens elsewhere than control_socket stops foreman with exit 1", "[systemd]") {
    Setup s;
    const std::string elsewhere = s.dir + "/elsewhere.sock";
    unique_fd listener = listening_socket(elsewhere);
    ServiceSpec spec = s.service({"LISTEN_FDS=1"});
    spec.own_pid_vars = {"LISTEN_PID"};
    spec.listen_fd = listener.get();
    ServiceProcess f(s.dir, spec);
    CHECK(f.wait_exit() == 1);
    std::string err = f.err();
    INFO("stderr:\n" << err);
    CHECK_THAT(err, Catch::Contains("listens at " + elsewhere + ", not at control_socket " + s.control));
    CHECK_FALSE(is_socket_file(s.control));
    CHECK(is_socket_file(elsewhere));
}

TEST_CASE("LISTEN_FDS meant for another pid is ignored: foreman binds control_socket itself", "[systemd]") {
    Setup s;
    const std::string elsewhere = s.dir + "/elsewhere.sock";
    unique_fd listener = listening_socket(elsewhere);
    ServiceSpec spec = s.service({"LISTEN_FDS=1", "LISTEN_PID=" + std::to_string(::getpid())});
    spec.listen_fd = listener.get();
    ServiceProcess f(s.dir, spec);
    REQUIRE(s.systemd.wait_for("READY=1"));
    INFO("stderr:\n" << f.err());
    CHECK(control_status(s.control).is_object());
    CHECK_THAT(f.err(), !Catch::Contains("passed by the service manager"));
    f.signal(SIGTERM);
    CHECK(f.wait_exit() == 0);
    CHECK_FALSE(is_socket_file(s.control)); // its own: removed
}

TEST_CASE("under systemd-socket-activate foreman serves the first connection and leaves the socket",
          "[systemd]") {
    std::string activate = find_program("systemd-socket-activate");
    if (activate.empty()) {
        WARN("skipped: systemd-socket-activate is not on PATH (Debian package systemd)");
        return;
    }
    Setup s;
    ServiceSpec spec = s.service();
    spec.argv.insert(spec.argv.begin(), {activate, "-l", s.control, "-E", "NOTIFY_SOCKET"});
    ServiceProcess f(s.dir, spec);
    // It binds and listens, then execs foreman (same pid) once a connection
    // comes: connect until the socket listens.
    boost::json::value status;
    REQUIRE(poll_until([&] { return (status = control_status(s.control)).is_object(); }, patience));
    INFO("stderr:\n" << f.err());
    CHECK(status.at("pools").as_array().at(0).at("protocol").as_string() == "echo");
    auto ready = s.systemd.wait_for("READY=1");
    REQUIRE(ready);
    CHECK(ready->pid == f.pid());
    CHECK_THAT(f.err(), Catch::Contains("passed by the service manager"));

    f.signal(SIGTERM);
    CHECK(f.wait_exit() == 0);
    CHECK(is_socket_file(s.control));
}

TEST_CASE("systemd-analyze verify accepts etc/systemd's units", "[systemd]") {
    std::string analyze = find_program("systemd-analyze");
    if (analyze.empty()) {
        WARN("skipped: systemd-analyze is not on PATH (Debian package systemd)");
        return;
    }
    TempDir tmp;
    // First a unit that cannot be wrong: if that fails, the tool does not
    // work here (no systemd at all, a container without /run/systemd...).
    std::ofstream(tmp.path() + "/probe.service") << "[Service]\nExecStart=/bin/true\n";
    auto probe = run_process({analyze, "verify", tmp.path() + "/probe.service"});
    if (probe.status != 0 || !probe.err.empty()) {
        WARN("skipped: systemd-analyze verify fails on a trivial unit here: " << probe.err);
        return;
    }
    // The templates, with the build tree's foreman where the installed one
    // would be (verify checks that ExecStart= is executable).
    std::vector<std::string> units;
    for (std::string unit : {"foreman.service", "foreman.socket"}) {
        std::string text = read_file(std::string(FOREMAN_SOURCE_DIR) + "/etc/systemd/" + unit + ".in");
        REQUIRE_FALSE(text.empty());
        text = std::regex_replace(text, std::regex("@CMAKE_INSTALL_FULL_BINDIR@"), FOREMAN_BIN_DIR);
        text = std::regex_replace(text, std::regex("@FOREMAN_CONF_DIR@"), tmp.path());
        INFO(unit << " after substitution:\n" << text);
        CHECK(text.find('@') == std::string::npos); // no placeholder this test does not know
        std::ofstream(tmp.path() + "/" + unit) << text;
        units.push_back(tmp.path() + "/" + unit);
    }
    auto result = run_process({analyze, "verify", units[0], units[1]});
    INFO("systemd-analyze verify:\n" << result.out << result.err);
    CHECK(result.status == 0);
    CHECK(result.err.empty()); // unknown keys and bad values are only warnings
    // And the units CMake configured name the installed foreman.
    std::string installed = read_file(std::string(FOREMAN_BUILD_DIR) + "/etc/systemd/foreman.service");
    CHECK_THAT(installed, Catch::Contains("ExecStart=" + std::string(FOREMAN_INSTALL_BINDIR) + "/foreman --config "));
    CHECK(installed.find('@') == std::string::npos);
}

TEST_CASE("SIGHUP logs one line per pool added, changed or removed, and none for an unchanged pool",
          "[systemd][reload]") {
    Setup s;
    s.write_config(s.echo_pool("same") + s.echo_pool("tuned") + s.echo_pool("relaunched") + s.echo_pool("gone"));
    ServiceProcess f(s.dir, s.service());
    REQUIRE(s.systemd.wait_for("READY=1"));

    s.write_config(s.echo_pool("same") + s.echo_pool("tuned", "max_requests = 7") +
                   s.echo_pool("relaunched", "args = --verbose") + s.echo_pool("new"));
    // A wait that fails says what foreman said, to systemd and on stderr.
    auto expect = [&](const std::string& line) {
        if (!s.systemd.wait_for(line))
            FAIL("no \"" << line << "\"; datagrams:\n" << s.systemd.transcript() << "stderr:\n" << f.err());
    };
    f.signal(SIGHUP);
    expect("STATUS=SIGHUP: reloaded " + s.conf);
    // The same file again: nothing to say about any pool.
    f.signal(SIGHUP);
    expect("RELOADING=1");
    expect("STATUS=SIGHUP: reloaded " + s.conf);
    f.signal(SIGTERM);
    REQUIRE(f.wait_exit() == 0);

    std::vector<std::string> pool_lines;
    std::stringstream err(f.err());
    std::string line;
    std::regex pool_event("foreman: info: pool \\S+ (added|changed|removed).*");
    while (std::getline(err, line))
        if (std::regex_match(line, pool_event)) pool_lines.push_back(line);
    INFO("stderr:\n" << f.err());
    CHECK(pool_lines == std::vector<std::string>{
                            "foreman: info: pool gone removed: it drains",
                            "foreman: info: pool tuned changed",
                            "foreman: info: pool relaunched changed: its workers are replaced",
                            "foreman: info: pool new added",
                        });
}
