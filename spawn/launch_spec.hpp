#pragma once
// Everything needed to start one worker process, prepared in the parent so
// that the child, between fork and exec, only makes system calls.

#include <string>
#include <sys/types.h>
#include <vector>

namespace foreman::spawn {

/// Who the child runs as (resolved in the parent: getpwnam and initgroups
/// are not safe between fork and exec).
struct Credentials {
    uid_t uid;
    gid_t gid;
    std::vector<gid_t> groups;
};

struct LaunchSpec {
    std::string path;              ///< absolute path of the executable
    std::vector<std::string> argv; ///< argv[0] first
    /// KEY=VALUE entries. LISTEN_PID and WATCHDOG_PID, when wanted, are
    /// appended by the child with its own pid.
    std::vector<std::string> env;
    bool set_listen_pid = false;
    bool set_watchdog_pid = false;
    int activation_fd = -1;        ///< becomes fd 3 (socket activation), or -1
    int output_fd = -1;            ///< becomes fds 1 and 2 (a pipe's write end)
    bool has_credentials = false;
    Credentials credentials{};
};

} // namespace foreman::spawn
