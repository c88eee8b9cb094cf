#pragma once
// What a worker's child process does between fork and exec. Everything here
// is async-signal-safe and allocates nothing: the buffers it writes were
// sized in the parent (a child of a threaded process may find any lock taken,
// the allocator's among them: docs/spawn.md).

#include "spawn/launch_spec.hpp"

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

    /// Runs in the child after fork and execs the worker. On any failure it
    /// writes the errno (an int) to `error_pipe` and _exit()s: it never returns.
    [[noreturn]] void run_in_child(int error_pipe);

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
