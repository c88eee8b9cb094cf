#pragma once
// The lease engine: every lifecycle rule of PROTOCOL.md as a pure state
// machine. It takes events (a LEASE asked, a worker ready, a heartbeat, an
// exit, the clock reaching a deadline) and appends decisions (grant, reject,
// spawn, terminate, kill, tell the holder) to `out`; broker/ carries them out
// and reports back. It reads no clock (every event carries `now`), makes no
// syscall and is not thread-safe: its owner serialises calls.

#include "lease/deadline_index.hpp"
#include "lease/decision.hpp"
#include "lease/pool_limits.hpp"
#include "lease/snapshot.hpp"

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

namespace foreman::lease {

struct EngineOptions {
    std::uint32_t max_workers = 256; ///< cap on workers across all pools
    std::uint64_t seed = 0;          ///< seeds the recycle jitter draw
};

/// A LEASE request as the engine sees it.
struct LeaseRequest {
    Ticket ticket;       ///< the caller's handle for the reply
    ClientId client;     ///< the connection that asks (must not be 0)
    Uid uid;             ///< its peer uid (for detached leases)
    std::string protocol;
    std::string user;                           ///< `user=`; required by per_user pools
    std::optional<std::chrono::milliseconds> ttl;  ///< `ttl_ms=`
    std::optional<std::chrono::milliseconds> wait; ///< `wait_ms=`
    std::optional<std::uint32_t> version;       ///< `version=`
    bool detach = false;                        ///< `detach=1`
};

enum class PoolChange { ok, exists, unknown, shutting_down };

class Engine {
public:
    explicit Engine(EngineOptions options);
    ~Engine();
    Engine(const Engine&) = delete;
    Engine& operator=(const Engine&) = delete;

    // ---- pools -------------------------------------------------------------
    /// Declares pool `protocol` (config load, SIGHUP, REGISTER). Spawns min_idle.
    PoolChange add_pool(TimePoint now, const std::string& protocol, const PoolLimits& limits,
                        Decisions& out);
    /// New limits for a live pool. With `restart_workers` (its path or args
    /// changed) every current worker is retired: idle ones now, leased ones
    /// when their lease ends.
    PoolChange update_pool(TimePoint now, const std::string& protocol, const PoolLimits& limits,
                           bool restart_workers, Decisions& out);
    /// UNREGISTER or SIGHUP removal: the pool takes no new lease, its queued
    /// LEASEs fail unknown-protocol, idle workers retire now and leased ones
    /// when their lease ends; it is gone when its last worker is.
    PoolChange remove_pool(TimePoint now, const std::string& protocol, Decisions& out);
    void set_max_workers(TimePoint now, std::uint32_t max_workers, Decisions& out);

    // ---- clients -----------------------------------------------------------
    /// Grants, queues or rejects; the answer is a Grant or Reject for
    /// `request.ticket`, now or later.
    void request_lease(TimePoint now, const LeaseRequest& request, Decisions& out);
    /// RENEW: the new ttl, or nullopt for no-such-lease (unknown, ended, or
    /// neither the holder's connection nor, when detached, the holder's uid).
    std::optional<std::chrono::milliseconds> renew(TimePoint now, LeaseId lease, ClientId client,
                                                   Uid uid);
    /// RELEASE: false for no-such-lease.
    bool release(TimePoint now, LeaseId lease, ClientId client, Uid uid, Decisions& out);
    /// The connection closed: its leases end (detached ones live on), its
    /// queued LEASEs are dropped unanswered.
    void client_closed(TimePoint now, ClientId client, Decisions& out);

    // ---- workers -----------------------------------------------------------
    /// The process of a Spawn decision runs with `pid`.
    void worker_started(TimePoint now, WorkerId worker, int pid, Decisions& out);
    /// The process of a Spawn decision could not be started; `error` says why
    /// (it is the text of the spawn-failed replies while the pool backs off).
    void spawn_failed(TimePoint now, WorkerId worker, const std::string& error, Decisions& out);
    /// READY=1 (or, with notify=none, its socket accepted a connect()).
    void worker_ready(TimePoint now, WorkerId worker, Decisions& out);
    /// WATCHDOG=1.
    void worker_heartbeat(TimePoint now, WorkerId worker, Decisions& out);
    /// STOPPING=1: it gets no new lease.
    void worker_stopping(TimePoint now, WorkerId worker, Decisions& out);
    /// STATUS=<text>.
    void worker_status(WorkerId worker, std::string text);
    /// The process exited (and was reaped).
    void worker_exited(TimePoint now, WorkerId worker, Decisions& out);
    /// The worker a notify datagram's sender pid belongs to.
    std::optional<WorkerId> worker_by_pid(int pid) const;

    // ---- time --------------------------------------------------------------
    /// When expire() next has something to do.
    std::optional<TimePoint> next_deadline() const;
    /// Handles everything due at `now`.
    void expire(TimePoint now, Decisions& out);

    // ---- shutdown ----------------------------------------------------------
    /// SIGTERM: no new leases, queued LEASEs fail shutting-down, idle workers
    /// retire now and leased ones as their leases end.
    void begin_shutdown(TimePoint now, Decisions& out);
    /// The grace is over: the remaining leases end (shutdown) and every
    /// worker is retired.
    void end_all(TimePoint now, Decisions& out);
    std::size_t live_leases() const;
    std::size_t workers_total() const;

    // ---- view --------------------------------------------------------------
    Snapshot snapshot(TimePoint now) const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

} // namespace foreman::lease
