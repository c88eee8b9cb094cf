#pragma once
// The broker's CPU time per heartbeat: M leased workers send WATCHDOG=1
// every interval (foreman-echo beats only while it serves a connection, so
// all M are leased and their connections held open); the broker's CPU over
// a window, minus its CPU over an equal window with the same workers idle
// (no heartbeats), divided by the heartbeats sent, M x window / interval.

#include <chrono>
#include <cstdint>
#include <string>
#include <sys/types.h>

namespace foreman::bench {

/// CPU time (user + system, all threads, ns resolution) `pid` has used so
/// far, from its CPU-time clock (clock_getcpuclockid).
std::chrono::nanoseconds process_cpu_time(pid_t pid);

struct HeartbeatCost {
    double baseline_cpu_ms_per_s = 0;  ///< broker CPU with the workers idle
    double beating_cpu_ms_per_s = 0;   ///< ... with all of them leased and beating
    double heartbeats_per_s = 0;       ///< M / interval, nominal
    double cpu_us_per_heartbeat = 0;   ///< (beating - baseline) / heartbeats
    std::uint64_t expired = 0;         ///< EXPIRED during the window (should be 0)
};

/// Leases all `workers` workers of `protocol` (which must be idle), measures,
/// releases them.
HeartbeatCost measure_heartbeat_cost(const std::string& socket, const std::string& protocol, int workers,
                                     std::chrono::milliseconds interval, pid_t broker,
                                     std::chrono::milliseconds window);

} // namespace foreman::bench
