#pragma once
// What the lease engine needs to know about one pool: the limits and timeouts
// of PROTOCOL.md's [pool.NAME] keys. For every limit, 0 means unlimited.
// How a worker is started (path, args, run_as...) is not here: that is spawn/'s.

#include <chrono>
#include <cstdint>

namespace foreman::lease {

using Millis = std::chrono::milliseconds;
using Seconds = std::chrono::seconds;

/// How a worker tells the broker it is ready (PROTOCOL.md "notify").
enum class NotifyMode {
    none,    ///< ready when connect() to its socket succeeds; no heartbeats
    systemd, ///< the first READY=1 ends start-up; WATCHDOG=1 are heartbeats
    foreman, ///< as systemd, and READY=1 while leased ends the lease
};

struct PoolLimits {
    std::uint32_t version = 1000;          ///< protocol version the pool serves
    std::uint32_t max_instances = 0;       ///< starting + idle + leased + stopping
    std::uint64_t max_requests = 0;        ///< leases per worker, then retired
    Seconds max_idletime{0};               ///< idle longer: retired
    Seconds max_processtime{0};            ///< lease longer: worker killed
    Seconds max_lifetime{0};               ///< retired after this, never while leased
    std::uint32_t min_idle = 0;            ///< idle workers kept ready
    NotifyMode notify = NotifyMode::none;
    Millis lease_ttl{30000};               ///< each renewal: expiry = now + ttl
    Millis heartbeat_timeout{0};           ///< leased and silent this long: hung
    Millis start_timeout{10000};           ///< not ready after this long: killed
    Millis kill_grace{2000};               ///< SIGTERM, then SIGKILL after this
    Millis queue_timeout{5000};            ///< default wait of a LEASE
    std::uint32_t max_queue = 1024;        ///< waiting LEASEs before `overloaded`
    bool per_user = false;                 ///< a worker serves one user only
    std::uint32_t max_instances_per_user = 1; ///< with per_user
    std::uint32_t max_leases_per_user = 0; ///< live leases of one user
    std::uint32_t recycle_jitter_pct = 10; ///< spread of max_requests, max_lifetime

    bool operator==(const PoolLimits&) const = default;
};

/// The smallest ttl_ms a LEASE may ask for (PROTOCOL.md).
inline constexpr Millis min_lease_ttl{100};

} // namespace foreman::lease
