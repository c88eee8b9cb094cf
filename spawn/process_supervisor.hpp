#pragma once
// Starts worker processes, signals their process groups and reaps them.
//
// It forks and execs itself (the child only makes system calls: see
// child_setup.hpp and docs/spawn.md for why not Boost.Process's launcher),
// and all of it happens on one thread of its own, running a private io_context:
// - PR_SET_PDEATHSIG fires when the *thread* that forked ends: this thread
//   lives as long as the supervisor;
// - a signal is only sent to a pid this thread has not reaped yet, so it can
//   never reach a recycled pid.
// Reaping is by pidfd (Boost.Process v2 async_wait): no SIGCHLD handler, no
// waitpid(-1), nothing that fights other code in the process.

#include "spawn/launch_spec.hpp"

#include <cstdint>
#include <functional>
#include <memory>
#include <system_error>

namespace foreman::spawn {

class ProcessSupervisor {
public:
    using Tag = std::uint64_t; ///< the caller's name for a process (a worker id)
    /// pid > 0 on success; otherwise `error` says why (an errno from the child's
    /// exec, setuid..., or from fork).
    using Started = std::function<void(Tag, int pid, std::error_code error)>;
    /// `status` is the raw wait status (WIFEXITED/WIFSIGNALED).
    using Exited = std::function<void(Tag, int pid, int status)>;

    /// `on_exit` runs on the supervisor's thread for every reaped child.
    explicit ProcessSupervisor(Exited on_exit);
    /// SIGKILLs every process group still running, reaps them, stops the thread.
    ~ProcessSupervisor();
    ProcessSupervisor(const ProcessSupervisor&) = delete;
    ProcessSupervisor& operator=(const ProcessSupervisor&) = delete;

    /// Starts `spec` on the supervisor's thread; `done` runs there once the
    /// exec succeeded or failed. The caller's descriptors in `spec` are closed
    /// after the start (they are the child's now).
    void start(Tag tag, LaunchSpec spec, Started done);
    /// Sends `signal` to the process group of `tag`, if it still runs.
    void signal_group(Tag tag, int signal);
    /// Processes started and not yet reaped.
    std::size_t running() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

/// "exited with status 3", "killed by signal 9 (Killed)".
std::string describe_wait_status(int status);

} // namespace foreman::spawn
