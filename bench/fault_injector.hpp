#pragma once
// foreman-bench tune's faults, and how long the broker takes to recover
// from each: a probe LEASE waits on a pool whose only worker the fault hits,
// and the recovery time is the probe's grant time minus the fault time.
//
//   client-kill  a client holding a lease is SIGKILLed: its connection
//                closes and the lease ends at once (pool notify=foreman:
//                the worker sees the end of its connection and says READY=1)
//   detached     a client holding a detach=1 lease dies without RELEASE:
//                the lease lives until its ttl (pool notify=none, so the
//                worker cannot end it with READY=1)
//   worker-stop  the leased worker is SIGSTOPped: no more heartbeats; after
//                heartbeat_timeout_ms the lease ends (worker-exit), the
//                worker is killed (SIGTERM, SIGKILL after kill_grace_ms) and
//                a replacement is started

#include "bench/histogram.hpp"

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

namespace foreman::bench {

enum class FaultKind { client_kill, detached, worker_stop };
inline constexpr std::array<FaultKind, 3> all_fault_kinds{FaultKind::client_kill, FaultKind::detached,
                                                          FaultKind::worker_stop};

/// "client-kill", "detached", "worker-stop".
std::string_view fault_name(FaultKind kind);
/// The same with underscores, for CSV columns and pool names.
std::string fault_id(FaultKind kind);
/// The pool a fault kind is injected into: "fault_" + fault_id(kind).
std::string fault_pool(FaultKind kind);

struct FaultStats {
    Histogram recovery{std::uint64_t{1} << 36}; ///< fault -> probe's grant, in nanoseconds
    std::uint64_t injected = 0;
    std::uint64_t unrecovered = 0; ///< the probe's LEASE failed (busy) or an error stopped the fault
};

/// One thread injecting one kind of fault, one at a time: each fault is
/// started no sooner than 1/rate seconds after the previous one started and
/// never before the previous one has recovered.
class FaultInjector {
public:
    FaultInjector(std::string socket, FaultKind kind, double rate, std::chrono::milliseconds probe_wait);
    /// stop() if still running.
    ~FaultInjector();
    FaultInjector(const FaultInjector&) = delete;
    FaultInjector& operator=(const FaultInjector&) = delete;

    /// Lets the fault in flight recover (at least one is always measured),
    /// then joins the thread.
    void stop();
    const FaultStats& stats() const { return stats_; }

private:
    void run();
    void one_fault();

    std::string socket_;
    FaultKind kind_;
    std::chrono::nanoseconds period_;
    std::chrono::milliseconds probe_wait_;
    FaultStats stats_;
    std::atomic<bool> stop_{false};
    std::thread thread_;
};

} // namespace foreman::bench
