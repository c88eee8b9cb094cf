// The real `foreman` binary as a separate process: signals, exit statuses,
// its stderr, and what it leaves behind. Workers are this test binary
// re-run in `dump` modes (test_worker.hpp), so each one writes its pid to a
// file the test can find: <dir>/dumps/<pool>.<worker id>.info.
//
// Waits are on events (a pidfd for foreman's exit and for workers' deaths).
// Where the only observable is a file someone else writes (a worker's dump,
// foreman's stderr, /proc/<pid>/status) the test polls it with short sleeps
// under a generous overall timeout.
//
// foreman SIGKILLed, and SIGHUP, are faults_test.cpp's (with live leases).

#include "broker_harness.hpp"
#include "foreman_process.hpp"

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

bool exists(const std::string& path) {
    struct stat st {};
    return ::lstat(path.c_str(), &st) == 0;
}

std::size_t count_lines(const std::string& text) {
    std::size_t n = 0;
    for (char c : text) n += c == '\n';
    return n;
}

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
