#pragma once
// The broker: wires events (control requests, notify datagrams, process
// exits, the deadline timer, signals) to the lease engine and carries out
// its decisions (spawn, signal, hand a worker connection over, tell a client).
//
// Ownership: one mutex guards the engine and everything keyed by its ids
// (workers' runtime state, pool configs, clients). Decisions are turned into
// self-contained actions under the lock and carried out after it is released,
// so no system call but clock reads happens while it is held.

#include "broker/config.hpp"
#include "lease/engine.hpp"
#include "spawn/unique_fd.hpp"

#include <boost/asio/io_context.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace foreman::broker {

/// What a client connection hears from the broker, outside the engine lock,
/// on any io thread. A control session implements it.
class ClientEvents {
public:
    virtual ~ClientEvents() = default;
    /// LEASE answered OK: `worker` is a connection to the worker, to hand over.
    virtual void granted(lease::Ticket ticket, lease::LeaseId lease, int pid, std::chrono::milliseconds ttl,
                         spawn::unique_fd worker) = 0;
    virtual void rejected(lease::Ticket ticket, protocol::FailCode code, const std::string& text) = 0;
    /// A lease of this client ended other than by its RELEASE.
    virtual void expired(lease::LeaseId lease, protocol::EndReason reason) = 0;
};

enum class PoolResult { ok, exists, unknown, invalid, shutting_down };

/// The steps of the broker's life that a service manager wants to hear of.
enum class Lifecycle {
    serving,   ///< the control socket accepts and the configured pools exist
    reloading, ///< SIGHUP: reading the file again
    reloaded,  ///< done, whether the file was applied or refused
    stopping,  ///< the graceful stop has begun
};

struct BrokerOptions {
    std::string config_file;             ///< what SIGHUP reloads (empty: nothing)
    std::vector<std::string> overrides;  ///< --key=value, applied again on reload
    bool handle_signals = true;          ///< SIGTERM/SIGINT stop, SIGHUP reloads
    /// Called (outside the lock, on any thread) after every event the engine
    /// handled, from the first worker start on and possibly after run()
    /// returned: lets tests and benchmarks wait for a state instead of
    /// sleeping. Given here, not later, because the constructor starts workers.
    std::function<void()> observer;
    /// Called at each Lifecycle step with a one-line status (for systemd's
    /// STATUS=), on the broker's own thread, outside the lock.
    std::function<void(Lifecycle, const std::string&)> lifecycle{};
    /// A listening control socket passed by the service manager (socket
    /// activation): served instead of binding control_socket, and its file
    /// is left in place at exit, since whoever bound it owns it.
    spawn::unique_fd control_listener{};
};

class Broker {
public:
    /// Creates the runtime directory, the control and notify sockets, and the
    /// pools (their min_idle workers start at once). Signals are handled from
    /// before the first worker starts. Throws std::system_error or
    /// std::runtime_error.
    explicit Broker(Config config, BrokerOptions options = {});
    ~Broker();
    Broker(const Broker&) = delete;
    Broker& operator=(const Broker&) = delete;

    /// Serves until stopped, on `threads` threads (the caller's among them).
    /// Returns once every worker is reaped and every socket removed.
    void run();
    /// Graceful stop (SIGTERM): no new leases, queued LEASEs fail
    /// shutting-down, leases get shutdown_grace_ms to end, then every worker
    /// is stopped and reaped. Thread-safe; returns at once.
    void stop();
    /// SIGHUP: reload the config file; a bad one is logged and ignored.
    void reload();
    boost::asio::io_context& io() { return io_; }
    const GlobalConfig& global() const { return config_.global; }
    /// Where metrics are served ("127.0.0.1:9100", with the port picked when
    /// metrics_listen asked for 0); empty when metrics_listen is.
    std::string metrics_address() const;
    /// The port of metrics_address(); 0 when metrics are off.
    std::uint16_t metrics_port() const;
    /// The Prometheus text of a scrape (what GET /metrics answers).
    std::string metrics_text();

    // ---- for control sessions (and tests) ----------------------------------
    lease::ClientId open_client(std::weak_ptr<ClientEvents> events);
    void close_client(lease::ClientId client);
    /// Answered later through the client's ClientEvents.
    void lease(const lease::LeaseRequest& request);
    std::optional<std::chrono::milliseconds> renew(lease::LeaseId lease, lease::ClientId client, lease::Uid uid);
    bool release(lease::LeaseId lease, lease::ClientId client, lease::Uid uid);
    lease::Snapshot snapshot();
    /// REGISTER: the pool as if it were in the file. `error` says why not.
    PoolResult register_pool(PoolConfig pool, std::string& error);
    /// UNREGISTER: the pool drains.
    PoolResult unregister_pool(const std::string& protocol);

private:
    struct Impl;
    /// The broker's own events (timers, signals, worker output, the control
    /// acceptor) and a share of the connections.
    boost::asio::io_context io_;
    /// One io_context per further thread, each run by that thread alone: a
    /// connection lives on one context, so its events never hop between
    /// threads (a shared io_context run by N threads handed most events to
    /// another thread, with a futex wake-up and a context switch each).
    std::vector<std::unique_ptr<boost::asio::io_context>> session_io_;
    Config config_;
    std::unique_ptr<Impl> impl_;
};

} // namespace foreman::broker
