#pragma once
// What operators run instead of a broker: a super-server that starts one
// process per connection. Two of them are packaged here (NOTES.md):
//   s6-ipcserver SOCKET PROG --stdio          (s6: the connection on fd 0/1)
//   systemd-socket-activate --accept -l SOCKET PROG   (the connection on fd 3)
// Both are started as processes of their own, so their CPU time (and their
// reaped children's) can be read from /proc like the broker's.

#include <chrono>
#include <cstdint>
#include <string>
#include <sys/types.h>

namespace foreman::bench {

enum class SpawnServerKind { s6_ipcserver, systemd_socket_activate };

/// "s6-ipcserver" or "systemd-socket-activate".
const char* to_string(SpawnServerKind kind);

class SpawnServer {
public:
    /// Starts the server on `socket` for `program` (foreman-echo), stderr to
    /// `log`, and returns once a connection to it is echoed. `max_connections`
    /// is s6-ipcserver's -c and -C (its defaults are 40 each);
    /// systemd-socket-activate has no such limit. Throws std::runtime_error
    /// when it exits or does not answer within 10 s.
    SpawnServer(SpawnServerKind kind, std::string socket, const std::string& program, const std::string& log,
                int max_connections);
    /// SIGTERM, then waits for it (its children serve one connection each
    /// and exit on EOF by themselves).
    ~SpawnServer();
    SpawnServer(const SpawnServer&) = delete;
    SpawnServer& operator=(const SpawnServer&) = delete;

    pid_t pid() const { return pid_; }
    const std::string& socket() const { return socket_; }
    /// Its own user + system CPU time, and its reaped children's.
    std::chrono::nanoseconds cpu_time() const;
    std::chrono::nanoseconds children_cpu_time() const;

private:
    void stop();

    pid_t pid_ = -1;
    std::string socket_;
};

/// User + system CPU time of process `pid` from /proc/PID/stat; with
/// `children`, that of its reaped children instead (cutime + cstime).
std::chrono::nanoseconds process_cpu_time(pid_t pid, bool children);

/// CPU time all cores spent busy since boot (/proc/stat: everything but idle
/// and iowait), for the machine-wide cost of a run.
std::chrono::nanoseconds machine_busy_time();

/// Context switches on all cores since boot (/proc/stat "ctxt").
std::uint64_t machine_context_switches();

} // namespace foreman::bench
