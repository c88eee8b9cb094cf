#pragma once
// What a worker's child process does between fork and exec, as a Boost.Process
// v2 launcher initializer. It replaces the launcher's own descriptor closing
// (off by one in 1.81), exec and exit() on failure (1.81 calls exit(), not
// _exit(), so atexit handlers and stdio buffers ran twice): see
// docs/spawn.md. Everything here is async-signal-safe: the buffers it writes
// were sized in the parent.

#include "spawn/launch_spec.hpp"

#include <boost/process/v2/posix/default_launcher.hpp>

#include <array>
#include <sys/types.h>
#include <vector>

namespace foreman::spawn {

class ChildSetup {
public:
    /// Prepares argv and envp from `spec` (which must outlive this object).
    explicit ChildSetup(const LaunchSpec& spec);
    ChildSetup(const ChildSetup&) = delete;
    ChildSetup& operator=(const ChildSetup&) = delete;

    /// Runs in the child after fork. Execs the worker; returns only to report
    /// an error, which it has also written to the launcher's error pipe.
    boost::process::v2::error_code on_exec_setup(boost::process::v2::posix::default_launcher& launcher,
                                                 const boost::process::v2::filesystem::path&,
                                                 const char* const*&);

    const char* const* argv() const { return argv_.data(); }

private:
    [[noreturn]] void fail(int error_pipe, int err);
    static void write_pid(char* digits, pid_t pid);

    const LaunchSpec& spec_;
    pid_t parent_;
    std::vector<const char*> argv_;
    std::vector<const char*> envp_;
    // "LISTEN_PID=" / "WATCHDOG_PID=" followed by room for any pid.
    std::array<char, 32> listen_pid_{};
    std::array<char, 32> watchdog_pid_{};
};

} // namespace foreman::spawn
