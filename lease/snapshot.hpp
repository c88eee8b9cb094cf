#pragma once
// A copy of the engine's state, for STATUS and for tests' invariants.

#include "lease/decision.hpp"
#include "lease/deadline_index.hpp"
#include "lease/pool_limits.hpp"
#include "lease/worker_state.hpp"

#include <array>
#include <optional>
#include <string>
#include <vector>

namespace foreman::lease {

/// Number of protocol::EndReason values (PoolView::leases_ended's index).
inline constexpr std::size_t end_reason_count = 7;
static_assert(static_cast<std::size_t>(protocol::EndReason::holder_closed) + 1 == end_reason_count);

struct LeaseView {
    LeaseId id;
    ClientId client; ///< 0 once a detached lease's connection closed
    Uid uid;
    bool detached;
    std::string user;
    std::chrono::milliseconds ttl;
    TimePoint granted_at;
    TimePoint expires_at;
};

struct WorkerView {
    WorkerId id;
    int pid; ///< 0 until the spawn is reported
    WorkerState state;
    std::uint64_t requests; ///< leases served
    std::uint64_t max_requests; ///< drawn with jitter; 0 = unlimited
    std::string user;       ///< per_user: the user it serves; else the last one served
    std::string status;     ///< last STATUS= text
    TimePoint started_at;
    std::optional<LeaseView> lease;
};

/// One user's share of a pool: what max_leases_per_user and
/// max_instances_per_user count. Users with nothing in the pool are absent.
struct UserView {
    std::string user;        ///< "" for LEASEs that named no user
    std::uint32_t leases;    ///< live leases
    std::uint32_t waiting;   ///< LEASEs waiting in the queue
    std::uint32_t workers;   ///< per_user pools: workers serving the user
};

struct PoolView {
    std::string protocol;
    PoolLimits limits;
    bool draining; ///< unregistered: takes no leases, ends when its workers do
    std::size_t queued;
    std::uint64_t leases_granted;
    std::uint64_t workers_started; ///< spawns so far
    std::uint32_t spawn_failures; ///< consecutive deaths before ready
    std::optional<TimePoint> backoff_until;
    std::string last_spawn_error;
    std::vector<WorkerView> workers;
    std::vector<UserView> users; ///< sorted by user
    /// Leases ended so far, indexed by protocol::EndReason (for metrics).
    std::array<std::uint64_t, end_reason_count> leases_ended{};
    /// Starts that failed so far, each a step of the back-off: the spawn
    /// failed, or the worker died or timed out before it was ready.
    std::uint64_t start_failures_total = 0;
};

struct Snapshot {
    std::size_t workers_total;
    std::uint32_t max_workers;
    bool shutting_down;
    std::vector<PoolView> pools;
};

} // namespace foreman::lease
