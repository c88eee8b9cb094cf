#pragma once
// Prometheus metrics (docs/metrics.md): what the broker counts per pool, what
// a scrape collects, and the text exposition format (version 0.0.4) it is
// rendered in. No I/O and no locking: the broker updates the counters under
// its own lock, copies them with the engine's snapshot, and renders the copy
// outside the lock (broker/metrics_server.hpp serves it over HTTP).

#include "lease/snapshot.hpp"
#include "protocol/end_reason.hpp"
#include "protocol/fail_code.hpp"

#include <array>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace foreman::broker::metrics {

using namespace std::chrono_literals;

/// Upper bounds of foreman_lease_wait_seconds' buckets: an idle worker is
/// granted within tens of microseconds, a queued LEASE waits up to its
/// wait_ms (queue_timeout_ms is 5 s by default).
inline constexpr std::array<std::chrono::nanoseconds, 17> lease_wait_bounds{
    50us, 100us, 250us, 500us, 1ms, 2500us, 5ms, 10ms, 25ms, 50ms, 100ms, 250ms, 500ms, 1s, 2500ms, 5s, 10s};

/// A histogram over lease_wait_bounds. Counts are kept per bucket (the
/// exposition makes them cumulative), so observe() touches one counter.
class WaitHistogram {
public:
    void observe(std::chrono::nanoseconds d) {
        std::size_t i = 0;
        while (i < lease_wait_bounds.size() && d > lease_wait_bounds[i]) ++i; // most grants stop at the first
        ++buckets_[i];
        sum_ += d;
    }
    /// Observations in bucket `i` alone; i == lease_wait_bounds.size() is above the last bound.
    std::uint64_t bucket(std::size_t i) const { return buckets_[i]; }
    std::uint64_t count() const;
    std::chrono::nanoseconds sum() const { return sum_; }

private:
    std::array<std::uint64_t, lease_wait_bounds.size() + 1> buckets_{};
    std::chrono::nanoseconds sum_{0};
};

/// Why a worker's process ended (foreman_worker_exits_total's `cause`).
enum class ExitCause : std::uint8_t {
    retired, ///< the broker sent SIGTERM (a limit, idle, STOPPING=1, shutdown...) and it ended of that
    killed,  ///< the broker sent SIGKILL (kill_grace ran out after SIGTERM) and it died of it
    crashed, ///< a signal the broker did not send ended it (SIGSEGV, SIGABRT, the OOM killer...)
    exited,  ///< it exited by itself, any exit status, without being asked to stop
};
inline constexpr std::size_t exit_cause_count = 4;
std::string_view to_string(ExitCause cause);

/// The cause of an exit with `wait_status`, given the strongest signal the
/// broker sent the worker: 0 (none), SIGTERM or SIGKILL.
ExitCause exit_cause(int wait_status, int signal_sent);

/// foreman_leases_ended_total's `reason`: PROTOCOL.md's EXPIRED reasons,
/// `release` (RELEASE) and `disconnect` (the holder's connection closed).
std::string_view end_reason_label(protocol::EndReason reason);

/// Number of protocol::FailCode values.
inline constexpr std::size_t fail_code_count = 10;
static_assert(static_cast<std::size_t>(protocol::FailCode::shutting_down) + 1 == fail_code_count);

/// What the broker counts for one pool as it carries out the engine's
/// decisions. Plain integers: every update happens under the broker's lock.
struct PoolCounters {
    std::uint64_t leases_granted = 0;
    std::uint64_t spawns = 0;
    std::array<std::uint64_t, exit_cause_count> exits{};
    std::array<std::uint64_t, fail_code_count> rejections{};
    WaitHistogram lease_wait;
};

/// Workers by the state STATUS shows (finishing counts as starting).
enum class ShownState : std::uint8_t { starting, idle, leased, stopping };
inline constexpr std::size_t shown_state_count = 4;

/// One pool at scrape time.
struct PoolSample {
    std::string name;
    PoolCounters counters;                                  ///< the broker's
    std::array<std::uint64_t, lease::end_reason_count> leases_ended{}; ///< the engine's, by EndReason
    std::uint64_t start_failures = 0;                        ///< the engine's
    std::array<std::uint64_t, shown_state_count> workers{};  ///< by ShownState
    std::uint64_t queued = 0;
};

/// Everything one scrape shows.
struct Scrape {
    std::vector<PoolSample> pools;            ///< at most one per name
    PoolCounters unknown_pool;                ///< LEASEs naming no pool (unknown-protocol): shown as pool=""
    std::uint64_t control_connections = 0;
    std::uint64_t max_workers = 0;
    double start_time_seconds = 0;            ///< when the broker started, since the Unix epoch
};

/// Adds the engine's view of one pool (its state gauges and its own
/// counters) to `sample`. Called once per PoolView: a pool being replaced
/// (a draining one and a live one of the same name) adds up under one name.
void add_pool_view(PoolSample& sample, const lease::PoolView& view);

/// `scrape` in the Prometheus text exposition format 0.0.4: a HELP and a TYPE
/// line for every family, then its samples, pools in the order given.
std::string render(const Scrape& scrape);

/// The exposition's Content-Type.
inline constexpr std::string_view content_type = "text/plain; version=0.0.4";

} // namespace foreman::broker::metrics
