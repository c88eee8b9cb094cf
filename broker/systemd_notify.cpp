#include "broker/systemd_notify.hpp"

#include "broker/log.hpp"

#include <systemd/sd-daemon.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <ctime>

namespace foreman::broker {
namespace {

std::string one_line(std::string text) {
    for (char& c : text)
        if (c == '\n') c = ' ';
    return text;
}

/// CLOCK_MONOTONIC in microseconds, which systemd wants with RELOADING=1
/// (from version 253 on, to tell this reload from an earlier one).
std::uint64_t monotonic_usec() {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1000000u + static_cast<std::uint64_t>(ts.tv_nsec) / 1000u;
}

void send(const std::string& state) {
    static std::atomic<bool> warned{false};
    int r = ::sd_notify(0, state.c_str());
    if (r < 0 && !warned.exchange(true))
        log_warning("sd_notify to NOTIFY_SOCKET failed: " + std::string(std::strerror(-r)) +
                    " (the service manager may not see this broker's state)");
}

} // namespace

std::string notify_state(Lifecycle step, const std::string& status) {
    std::string state;
    switch (step) {
    case Lifecycle::serving: state = "READY=1\n"; break;
    case Lifecycle::reloading: state = "RELOADING=1\nMONOTONIC_USEC=" + std::to_string(monotonic_usec()) + "\n"; break;
    case Lifecycle::reloaded: state = "READY=1\n"; break;
    case Lifecycle::stopping: state = "STOPPING=1\n"; break;
    }
    return state + "STATUS=" + one_line(status);
}

void notify_service_manager(Lifecycle step, const std::string& status) { send(notify_state(step, status)); }

Watchdog::Watchdog(boost::asio::io_context& io) : timer_(io) {
    std::uint64_t usec = 0;
    if (::sd_watchdog_enabled(0, &usec) <= 0 || usec == 0) return;
    // At least 1 ms apart, whatever WATCHDOG_USEC says: never a busy loop.
    interval_ = std::max(std::chrono::microseconds(usec / 2), std::chrono::microseconds(1000));
    log_info("systemd watchdog: WATCHDOG=1 every " + std::to_string(interval_.count() / 1000) + " ms");
    ping();
}

void Watchdog::ping() {
    send("WATCHDOG=1");
    timer_.expires_after(interval_);
    timer_.async_wait([this](const boost::system::error_code& ec) {
        if (!ec) ping();
    });
}

} // namespace foreman::broker
