#pragma once
// The control socket: binds it (refusing to take over a live broker's,
// replacing a stale one) or serves one the service manager passed, accepts
// connections up to max_clients, and starts a ControlSession for each.
//
// Out of descriptors (EMFILE, ENFILE) it pauses: the listener is
// edge-triggered under Asio, so a failed accept would otherwise be retried
// only when the next client connects, and a level-triggered loop would spin.
// It keeps a reserve of descriptors while it accepts and gives them back
// when accept fails, so the connections it has can still lease (each grant
// needs a descriptor to connect to the worker); every accept_pause it takes
// the reserve again and tries, until clients have closed enough.

#include "broker/config.hpp"
#include "lease/decision.hpp"
#include "spawn/unique_fd.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <string>
#include <vector>

namespace foreman::broker {

class Broker;
class ControlSession;

class ControlServer {
public:
    /// Where each new connection lives: the io_context that runs it.
    using PickContext = std::function<boost::asio::io_context&()>;

    /// Binds `global.control_socket` with `control_socket_mode`, unless
    /// `inherited` holds a listening socket (socket activation) to serve
    /// instead; accepts on `io`, and runs each connection on the context
    /// `pick` gives. Throws std::runtime_error when a live broker answers
    /// there or it cannot bind.
    ControlServer(Broker& broker, boost::asio::io_context& io, PickContext pick, const GlobalConfig& global,
                  spawn::unique_fd inherited = {});
    ~ControlServer();

    void start();
    /// Stops accepting, closes every session, removes the socket file if
    /// it bound it.
    void close();

    /// A broker-wide unique LEASE ticket.
    lease::Ticket next_ticket() { return ++tickets_; }
    void session_ended(ControlSession* session);
    /// Connections open now (foreman_control_connections).
    std::size_t connections();

private:
    void accept();
    /// Accepts until EAGAIN (true: wait for readability) or until out of
    /// descriptors or closed (false).
    bool on_readable();
    /// Out of descriptors: give the reserve back and try again later.
    void pause(int error);
    /// Takes the reserve; false (holding none) when it cannot.
    bool fill_reserve();

    Broker& broker_;
    PickContext pick_;
    std::string path_;
    bool owns_path_; ///< bound here, not inherited: removed by close()
    std::uint32_t max_clients_;
    boost::asio::posix::stream_descriptor listener_;
    std::atomic<lease::Ticket> tickets_{0};
    std::mutex mu_; ///< guards sessions_ and closed_
    std::unordered_map<ControlSession*, std::shared_ptr<ControlSession>> sessions_;
    bool closed_ = false;
    // Touched only by the acceptor's handlers (the broker's own io thread).
    std::vector<spawn::unique_fd> reserve_;
    boost::asio::steady_timer pause_timer_;
    bool paused_ = false;
};

/// Whether a process answers on the unix socket at `path`.
bool socket_is_live(const std::string& path);

} // namespace foreman::broker
