#pragma once
// The control socket: binds it (refusing to take over a live broker's,
// replacing a stale one), accepts connections up to max_clients, and
// starts a ControlSession for each.

#include "broker/config.hpp"
#include "lease/decision.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <string>

namespace foreman::broker {

class Broker;
class ControlSession;

class ControlServer {
public:
    /// Where each new connection lives: the io_context that runs it.
    using PickContext = std::function<boost::asio::io_context&()>;

    /// Binds `global.control_socket` with `control_socket_mode`; accepts on
    /// `io`, and runs each connection on the context `pick` gives. Throws
    /// std::runtime_error when a live broker answers there or it cannot bind.
    ControlServer(Broker& broker, boost::asio::io_context& io, PickContext pick, const GlobalConfig& global);
    ~ControlServer();

    void start();
    /// Stops accepting, closes every session, removes the socket file.
    void close();

    /// A broker-wide unique LEASE ticket.
    lease::Ticket next_ticket() { return ++tickets_; }
    void session_ended(ControlSession* session);

private:
    void accept();
    void on_readable();

    Broker& broker_;
    PickContext pick_;
    std::string path_;
    std::uint32_t max_clients_;
    boost::asio::posix::stream_descriptor listener_;
    /// Out of descriptors, accept() fails while the listener stays readable:
    /// waiting on it again would spin. This timer paces the retries.
    boost::asio::steady_timer accept_pause_;
    bool paused_ = false; ///< on_readable() ran out of descriptors
    bool out_of_descriptors_logged_ = false; ///< once per shortage, not per retry
    std::atomic<lease::Ticket> tickets_{0};
    std::mutex mu_; ///< guards sessions_ and closed_
    std::unordered_map<ControlSession*, std::shared_ptr<ControlSession>> sessions_;
    bool closed_ = false;
};

/// Whether a process answers on the unix socket at `path`.
bool socket_is_live(const std::string& path);

} // namespace foreman::broker
