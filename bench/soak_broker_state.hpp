#pragma once
// What foreman-bench soak reads of the broker from outside, to tell whether
// a long run left anything behind: its descriptors (/proc/<pid>/fd), its
// children that nobody reaped (/proc/*/stat), and what STATUS says of leases,
// queues and worker states. Waiting for the broker to settle polls these
// with a deadline; nothing here sleeps a fixed time to "let it settle".

#include "client/connection.hpp"

#include <boost/json/value.hpp>

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <sys/types.h>
#include <vector>

namespace foreman::bench {

/// Descriptors open in process `pid` (entries of /proc/<pid>/fd), or -1
/// when they cannot be read (it is gone).
int open_fd_count(pid_t pid);

/// Threads of process `pid` (entries of /proc/<pid>/task), or -1.
int thread_count(pid_t pid);

/// Children of `pid` in state Z: exited, not reaped.
std::vector<pid_t> zombie_children(pid_t pid);

/// Whether `pid` has exited (gone, or a zombie waiting for its parent).
bool has_exited(pid_t pid);

/// STATUS summed over every pool.
struct PoolsView {
    int leased = 0;
    int starting = 0;
    int stopping = 0;
    std::int64_t queued = 0;
    std::map<std::string, int> idle;         ///< idle workers, by pool
    std::vector<std::uint64_t> live_leases;  ///< the "lease" of every leased worker
};

PoolsView pools_view(const boost::json::value& status);

/// Whether a worker in STATUS still holds lease `id`.
bool lease_live(const boost::json::value& status, std::uint64_t id);

/// The broker at rest: every pool at `idle` idle workers and none in
/// another state, nothing queued, no zombie child, and (when given) exactly
/// `fds` descriptors open.
struct RestState {
    PoolsView pools;
    int fds = -1;
    std::vector<pid_t> zombies;
    bool at_rest = false;
    std::chrono::duration<double> waited{0};
};

/// Polls STATUS on `monitor` and the broker's /proc entries every few
/// milliseconds until it is at rest or `limit` has passed; returns the last
/// state seen either way.
RestState wait_at_rest(client::Connection& monitor, pid_t broker, const std::map<std::string, int>& idle,
                       std::optional<int> fds, std::chrono::milliseconds limit);

} // namespace foreman::bench
