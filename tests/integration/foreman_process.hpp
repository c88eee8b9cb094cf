#pragma once
// The real `foreman` binary as a child process of the test: started by
// fork+exec with stdin on /dev/null and stdout and stderr in files, waited
// for by pidfd, killed and reaped at the end if the test has not reaped it.

#include <chrono>
#include <optional>
#include <string>
#include <unistd.h>
#include <vector>

namespace foreman::test {

/// build/bin/foreman.
std::string foreman_bin();
/// The whole of the file at `path` ("" when it cannot be read).
std::string read_file(const std::string& path);

/// Polls until `ok()` holds: for observables that are files written by
/// another process, which the test cannot wait on otherwise.
template <class F>
bool poll_until(F ok, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        if (ok()) return true;
        if (std::chrono::steady_clock::now() >= deadline) return false;
        ::usleep(2000);
    }
}

class ForemanProcess {
public:
    /// Runs foreman with `args`; its output goes to <dir>/foreman.stdout and .stderr.
    ForemanProcess(const std::string& dir, std::vector<std::string> args);
    ~ForemanProcess();
    ForemanProcess(const ForemanProcess&) = delete;
    ForemanProcess& operator=(const ForemanProcess&) = delete;

    int pid() const { return pid_; }
    void signal(int sig) const;

    /// Waits up to `timeout` for it to exit (pidfd), then reaps it: its raw
    /// wait status, or nothing if it still runs.
    std::optional<int> wait_exit(std::chrono::milliseconds timeout);

    /// Waits until it takes SIGTERM and SIGHUP itself (a signal sent earlier
    /// would kill it by default action): foreman blocks them and reads them
    /// from a signalfd. Read from /proc/<pid>/status, SigBlk (or SigCgt, for
    /// a program that catches them): nothing else tells.
    bool wait_handling_signals(std::chrono::milliseconds timeout = std::chrono::seconds(10)) const;

    std::string err() const { return read_file(stderr_path_); }
    std::string out() const { return read_file(stdout_path_); }
    /// Polls its stderr for `text`.
    bool wait_stderr(const std::string& text, std::chrono::milliseconds timeout = std::chrono::seconds(10)) const;

private:
    std::string stdout_path_;
    std::string stderr_path_;
    int pid_ = -1;
    int status_ = 0;
    bool reaped_ = false;
};

} // namespace foreman::test
