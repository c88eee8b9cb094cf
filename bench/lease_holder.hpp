#pragma once
// A lease held by another process: foreman-bench re-runs itself as
// `foreman-bench tune --hold-lease SOCKET PROTOCOL WAIT_MS DETACH`, which
// leases, reports the grant on stdout, renews at ttl/3 as a careful client
// does, and releases when its stdin closes. The tune mode SIGKILLs it to
// inject a client crash, or lets it hold while the worker is stopped.

#include <chrono>
#include <cstdint>
#include <string>
#include <sys/types.h>
#include <vector>

namespace foreman::bench {

class LeaseHolder {
public:
    /// Starts the helper and returns once it holds the lease. Throws
    /// std::runtime_error when it cannot lease (its error goes to stderr).
    LeaseHolder(const std::string& socket, const std::string& protocol, std::chrono::milliseconds wait, bool detach);
    /// finish() unless done already.
    ~LeaseHolder();
    LeaseHolder(const LeaseHolder&) = delete;
    LeaseHolder& operator=(const LeaseHolder&) = delete;

    pid_t pid() const { return pid_; }
    std::uint64_t lease_id() const { return lease_id_; }
    pid_t worker_pid() const { return worker_pid_; }

    /// SIGKILL (reaped by finish()): the client crashed.
    void kill_now();
    /// Closes its stdin (it releases and exits, unless killed), reaps it;
    /// SIGKILL after 5 s.
    void finish();

private:
    pid_t pid_ = -1;
    int to_child_ = -1;
    std::uint64_t lease_id_ = 0;
    pid_t worker_pid_ = 0;
};

/// The helper's main: args are SOCKET PROTOCOL WAIT_MS DETACH(0|1).
int hold_lease_main(const std::vector<std::string>& args);

} // namespace foreman::bench
