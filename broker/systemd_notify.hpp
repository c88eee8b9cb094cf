#pragma once
// Telling systemd (Type=notify) how the broker is doing, through libsystemd's
// sd_notify(): READY=1 once it serves, RELOADING=1 then READY=1 around a
// reload, STOPPING=1 when it begins to stop, each with a STATUS= line; and
// WATCHDOG=1 every WATCHDOG_USEC/2 when systemd asks for it (WatchdogSec=).
// Without NOTIFY_SOCKET (not started by systemd) all of it does nothing.
//
// The broker's own NOTIFY_SOCKET is never unset: sd_notify() reads it on
// every call, and workers do not inherit it anyway (they get the broker's
// notify socket instead: worker_launch.cpp).

#include "broker/broker.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <string>

namespace foreman::broker {

/// The sd_notify(3) state for one step of the broker's life: "READY=1",
/// "STOPPING=1"... and a STATUS= line with `status` (newlines replaced, as
/// one datagram line must not hold one).
std::string notify_state(Lifecycle step, const std::string& status);

/// Sends notify_state() to the service manager, if there is one. A failure
/// is logged as a warning, once.
void notify_service_manager(Lifecycle step, const std::string& status);

/// WATCHDOG=1 every WATCHDOG_USEC/2, from a timer on the broker's own
/// io_context: the thread that runs its timers, signals and accepts, so a
/// broker whose event loop is stuck stops pinging and systemd restarts it.
/// Does nothing unless sd_watchdog_enabled() says systemd watches this pid
/// (WATCHDOG_USEC set, WATCHDOG_PID unset or ours).
class Watchdog {
public:
    /// Must be destroyed before `io`.
    explicit Watchdog(boost::asio::io_context& io);
    Watchdog(const Watchdog&) = delete;
    Watchdog& operator=(const Watchdog&) = delete;

    /// The ping interval; zero when systemd does not watch.
    std::chrono::microseconds interval() const { return interval_; }

private:
    void ping();

    boost::asio::steady_timer timer_;
    std::chrono::microseconds interval_{0};
};

} // namespace foreman::broker
