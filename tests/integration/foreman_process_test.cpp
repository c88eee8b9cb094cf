// The real `foreman` binary as a separate process: signals, exit statuses,
// its stderr, and what it leaves behind. Workers are this test binary
// re-run in `dump` modes (test_worker.hpp), so each one writes its pid to a
// file the test can find: <dir>/dumps/<pool>.<worker id>.info.
//
// Waits are on events (a pidfd for foreman's exit and for workers' deaths).
// Where the only observable is a file someone else writes (a worker's dump,
// foreman's stderr, /proc/<pid>/status) the test polls it with short sleeps
// under a generous overall timeout.

#include "broker_harness.hpp"

#include <catch2/catch.hpp>

#include <csignal>
#include <fcntl.h>
#include <fstream>
#include <optional>
#include <poll.h>
#include <sstream>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace foreman::test;
using namespace std::chrono_literals;

namespace {

std::string foreman_bin() { return std::string(FOREMAN_BIN_DIR) + "/foreman"; }

std::string read_file(const std::string& path) {
    std::ifstream f(path);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

bool exists(const std::string& path) {
    struct stat st {};
    return ::lstat(path.c_str(), &st) == 0;
}

/// Polls until `ok()` holds: for observables that are files written by
/// another process, which the test cannot wait on otherwise.
template <class F>
bool poll_until(F ok, std::chrono::milliseconds timeout = 10s) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        if (ok()) return true;
        if (std::chrono::steady_clock::now() >= deadline) return false;
        ::usleep(2000);
    }
}

std::size_t count_lines(const std::string& text) {
    std::size_t n = 0;
    for (char c : text) n += c == '\n';
    return n;
}

/// A foreman process started by fork+exec: stdin on /dev/null, stdout and
/// stderr into files of the test's folder. Killed and reaped at the end if
/// the test has not reaped it.
class ForemanProcess {
public:
    ForemanProcess(const std::string& dir, std::vector<std::string> args)
        : stdout_path_(dir + "/foreman.stdout"), stderr_path_(dir + "/foreman.stderr") {
        args.insert(args.begin(), foreman_bin());
        std::vector<char*> argv;
        for (auto& a : args) argv.push_back(a.data());
        argv.push_back(nullptr);
        // Opened before the fork: the child only dup2()s and execs.
        int in = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
        int out = ::open(stdout_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        int err = ::open(stderr_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        REQUIRE((in >= 0 && out >= 0 && err >= 0));
        pid_ = ::fork();
        REQUIRE(pid_ >= 0);
        if (pid_ == 0) {
            sigset_t none;
            sigemptyset(&none);
            ::sigprocmask(SIG_SETMASK, &none, nullptr);
            if (::dup2(in, 0) < 0 || ::dup2(out, 1) < 0 || ::dup2(err, 2) < 0) ::_exit(126);
            ::execv(argv[0], argv.data());
            ::_exit(127);
        }
        ::close(in);
        ::close(out);
        ::close(err);
    }

    ~ForemanProcess() {
        if (reaped_) return;
        ::kill(pid_, SIGKILL);
        int status;
        ::waitpid(pid_, &status, 0);
    }

    ForemanProcess(const ForemanProcess&) = delete;
    ForemanProcess& operator=(const ForemanProcess&) = delete;

    int pid() const { return pid_; }
    void signal(int sig) const { REQUIRE(::kill(pid_, sig) == 0); }

    /// Waits up to `timeout` for it to exit (pidfd), then reaps it: its raw
    /// wait status, or nothing if it still runs.
    std::optional<int> wait_exit(std::chrono::milliseconds timeout) {
        if (!reaped_) {
            int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid_, 0));
            REQUIRE(fd >= 0);
            pollfd p{fd, POLLIN, 0};
            int r = ::poll(&p, 1, static_cast<int>(timeout.count()));
            ::close(fd);
            if (r != 1) return std::nullopt;
            REQUIRE(::waitpid(pid_, &status_, 0) == pid_);
            reaped_ = true;
        }
        return status_;
    }

    /// Waits until it has installed its handlers of SIGTERM and SIGHUP (a
    /// signal sent earlier would kill it by default action). Read from
    /// /proc/<pid>/status, SigCgt: nothing else tells.
    bool wait_handling_signals(std::chrono::milliseconds timeout = 10s) const {
        const unsigned long wanted = (1UL << (SIGTERM - 1)) | (1UL << (SIGHUP - 1));
        std::string status_file = "/proc/" + std::to_string(pid_) + "/status";
        return poll_until(
            [&] {
                std::ifstream f(status_file);
                std::string line;
                while (std::getline(f, line))
                    if (line.rfind("SigCgt:", 0) == 0)
                        return (std::stoul(line.substr(7), nullptr, 16) & wanted) == wanted;
                return false;
            },
            timeout);
    }

    std::string err() const { return read_file(stderr_path_); }
    std::string out() const { return read_file(stdout_path_); }
    /// Polls its stderr for `text`.
    bool wait_stderr(const std::string& text, std::chrono::milliseconds timeout = 10s) const {
        return poll_until([&] { return err().find(text) != std::string::npos; }, timeout);
    }

private:
    std::string stdout_path_;
    std::string stderr_path_;
    int pid_ = -1;
    int status_ = 0;
    bool reaped_ = false;
};

/// A test's folder: the config file, the runtime dir, the workers' dumps.
struct Setup {
    TempDir tmp;
    std::string dir = tmp.path();
    std::string conf = dir + "/foreman.conf";
    std::string run = dir + "/run";
    std::string dumps = dir + "/dumps";

    Setup() { REQUIRE(::mkdir(dumps.c_str(), 0755) == 0); }

    /// Writes the config file whole (rename), so a SIGHUP never reads half of it.
    void write_config(const std::string& text) const {
        std::string tmp_file = conf + ".tmp";
        std::ofstream(tmp_file) << text;
        REQUIRE(std::rename(tmp_file.c_str(), conf.c_str()) == 0);
    }

    /// A pool of the test binary in `mode` (dump or dump-ignore-term).
    std::string pool(const std::string& name, const std::string& mode, int min_idle) const {
        return "[pool." + name + "]\npath = " + self_exe() + "\nargs = worker " + mode + " " + dumps +
               "/{protocol}.{worker}.info\nnotify = foreman\nkill_grace_ms = 300\nmin_idle = " +
               std::to_string(min_idle) + "\n";
    }

    std::string dump_path(const std::string& pool, int worker) const {
        return dumps + "/" + pool + "." + std::to_string(worker) + ".info";
    }

    /// The pid in worker `worker`'s dump of `pool`, once it has written it; 0 if never.
    int wait_worker_pid(const std::string& pool, int worker, std::chrono::milliseconds timeout = 10s) const {
        std::string path = dump_path(pool, worker);
        if (!poll_until([&] { return exists(path); }, timeout)) return 0;
        std::string text = read_file(path);
        REQUIRE(text.rfind("pid=", 0) == 0);
        return std::stoi(text.substr(4));
    }

    std::vector<std::string> args() const { return {"--config", conf, "--runtime_dir=" + run}; }
};

bool alive(int pid) { return ::kill(pid, 0) == 0; }

} // namespace

TEST_CASE("SIGTERM stops foreman: every worker reaped, its sockets removed, exit 0 within kill_grace + 1 s",
          "[foreman]") {
    Setup s;
    s.write_config("shutdown_grace_ms = 5000\n" + s.pool("stubborn", "dump-ignore-term", 2));
    ForemanProcess f(s.dir, s.args());
    int w1 = s.wait_worker_pid("stubborn", 1);
    int w2 = s.wait_worker_pid("stubborn", 2);
    INFO("stderr:\n" << f.err());
    REQUIRE(w1 > 0);
    REQUIRE(w2 > 0);
    REQUIRE(f.wait_handling_signals());
    REQUIRE(exists(s.run + "/notify.sock"));
    REQUIRE(exists(s.run + "/stubborn/1.sock"));
    REQUIRE(exists(s.run + "/stubborn/2.sock"));

    auto t0 = std::chrono::steady_clock::now();
    f.signal(SIGTERM);
    auto status = f.wait_exit(5s);
    auto took = std::chrono::steady_clock::now() - t0;
    INFO("stderr:\n" << f.err());
    REQUIRE(status.has_value());
    CHECK(WIFEXITED(*status));
    CHECK(WEXITSTATUS(*status) == 0);
    CHECK(took < 1300ms);
    CHECK(took >= 250ms); // the workers ignored SIGTERM: SIGKILL after kill_grace ended them
    for (int pid : {w1, w2}) {
        CHECK(wait_pid_gone(pid, 0ms));
        CHECK_FALSE(is_zombie(pid));
    }
    CHECK_FALSE(exists(s.run + "/notify.sock"));
    CHECK_FALSE(exists(s.run + "/stubborn/1.sock"));
    CHECK_FALSE(exists(s.run + "/stubborn/2.sock"));
    CHECK_FALSE(exists(s.run + "/stubborn"));
}

TEST_CASE("if foreman is SIGKILLed, no worker outlives it", "[foreman]") {
    Setup s;
    s.write_config(s.pool("orphans", "dump-ignore-term", 2));
    ForemanProcess f(s.dir, s.args());
    int w1 = s.wait_worker_pid("orphans", 1);
    int w2 = s.wait_worker_pid("orphans", 2);
    REQUIRE(w1 > 0);
    REQUIRE(w2 > 0);
    f.signal(SIGKILL);
    auto status = f.wait_exit(5s);
    REQUIRE(status.has_value());
    CHECK(WIFSIGNALED(*status));
    // PR_SET_PDEATHSIG: SIGKILL, which ignoring SIGTERM does not help against.
    CHECK(wait_pid_gone(w1, 2s));
    CHECK(wait_pid_gone(w2, 2s));
}

TEST_CASE("a bad config exits 2 with one line naming the file, line and key", "[foreman]") {
    Setup s;
    std::string expected_line, expected_key;
    SECTION("an unknown key in a pool section") {
        s.write_config("[pool.a]\npath = " + self_exe() + "\nmin_idle = 1\nbogus_key = 1\n");
        expected_line = ":4:";
        expected_key = "pool.a.bogus_key";
    }
    SECTION("a duplicate pool") {
        s.write_config(s.pool("a", "dump", 1) + s.pool("a", "dump", 1));
        expected_line = ":7:"; // the second [pool.a]: each pool() is 6 lines
        expected_key = "[pool.a]";
    }
    ForemanProcess f(s.dir, s.args());
    auto status = f.wait_exit(10s);
    REQUIRE(status.has_value());
    std::string err = f.err();
    INFO("stderr:\n" << err);
    CHECK(WIFEXITED(*status));
    CHECK(WEXITSTATUS(*status) == 2);
    CHECK(count_lines(err) == 1);
    CHECK(err.back() == '\n');
    CHECK_THAT(err, Catch::Contains(s.conf + expected_line));
    CHECK_THAT(err, Catch::Contains(expected_key));
    // Nothing was started: not even the runtime folder exists.
    CHECK_FALSE(exists(s.run));
    CHECK_FALSE(exists(s.dump_path("a", 1)));
}

TEST_CASE("foreman --check-config validates and exits 0 without starting anything", "[foreman]") {
    Setup s;
    s.write_config(s.pool("a", "dump", 2) + s.pool("b", "dump", 1));
    std::vector<std::string> args = s.args();
    args.insert(args.begin(), "--check-config");
    ForemanProcess f(s.dir, args);
    auto status = f.wait_exit(10s);
    REQUIRE(status.has_value());
    INFO("stderr:\n" << f.err());
    CHECK(WIFEXITED(*status));
    CHECK(WEXITSTATUS(*status) == 0);
    CHECK_THAT(f.out(), Catch::Contains("ok, 2 pools"));
    CHECK(f.err().empty());
    CHECK_FALSE(exists(s.run)); // no runtime folder, no notify socket, no worker
    CHECK_FALSE(exists(s.dump_path("a", 1)));
    CHECK_FALSE(exists(s.dump_path("b", 3)));
}

TEST_CASE("SIGHUP adds a pool from the reloaded file without touching the running one", "[foreman]") {
    Setup s;
    s.write_config(s.pool("a", "dump", 1));
    ForemanProcess f(s.dir, s.args());
    int a1 = s.wait_worker_pid("a", 1);
    REQUIRE(a1 > 0);
    REQUIRE(f.wait_handling_signals());

    s.write_config(s.pool("a", "dump", 1) + s.pool("b", "dump", 1));
    f.signal(SIGHUP);
    // Worker ids are the broker's, across pools: b's first worker is 2.
    int b2 = s.wait_worker_pid("b", 2);
    INFO("stderr:\n" << f.err());
    REQUIRE(b2 > 0);
    CHECK(f.wait_stderr("SIGHUP: reloaded " + s.conf));
    CHECK(alive(a1));
    CHECK_FALSE(exists(s.dump_path("a", 3))); // a's worker was not replaced
    CHECK(exists(s.run + "/a/1.sock"));
    CHECK(exists(s.run + "/b/2.sock"));
    CHECK_FALSE(f.wait_exit(0ms).has_value());

    f.signal(SIGTERM);
    auto status = f.wait_exit(10s);
    REQUIRE(status.has_value());
    CHECK(WIFEXITED(*status));
    CHECK(WEXITSTATUS(*status) == 0);
    CHECK(wait_pid_gone(a1, 0ms));
    CHECK(wait_pid_gone(b2, 0ms));
}

TEST_CASE("SIGHUP with a bad file keeps the old configuration", "[foreman]") {
    Setup s;
    s.write_config(s.pool("a", "dump", 1));
    ForemanProcess f(s.dir, s.args());
    int a1 = s.wait_worker_pid("a", 1);
    REQUIRE(a1 > 0);
    REQUIRE(f.wait_handling_signals());

    // Pool a gone and a new pool with an unknown key: applied, this would
    // drain a and start c.
    s.write_config("[pool.c]\npath = " + self_exe() + "\nmin_idle = 1\nbogus_key = 1\n");
    f.signal(SIGHUP);
    REQUIRE(f.wait_stderr("the old configuration stays in force"));
    std::string err = f.err();
    INFO("stderr:\n" << err);
    CHECK_THAT(err, Catch::Contains(s.conf + ":4: pool.c.bogus_key"));
    CHECK(alive(a1));
    CHECK_FALSE(f.wait_exit(0ms).has_value());
    CHECK(exists(s.run + "/a/1.sock"));
    CHECK_FALSE(exists(s.run + "/c"));

    // The old config is still the one in force: a's worker is stopped by
    // SIGTERM as usual, and nothing of c ever started.
    f.signal(SIGTERM);
    auto status = f.wait_exit(10s);
    REQUIRE(status.has_value());
    CHECK(WIFEXITED(*status));
    CHECK(WEXITSTATUS(*status) == 0);
    CHECK(wait_pid_gone(a1, 0ms));
    CHECK_FALSE(exists(s.dump_path("c", 2)));
}
