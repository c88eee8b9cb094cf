#pragma once
// One control connection (PROTOCOL.md "Control protocol"): the VERSION
// handshake, requests read line by line and answered as they complete
// (a waiting LEASE never holds back a later request), worker connections
// passed with SCM_RIGHTS with the bytes of their OK line, EXPIRED events.
// All of its state lives on one strand.

#include "broker/broker.hpp"
#include "protocol/control_line.hpp"
#include "spawn/unique_fd.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/strand.hpp>

#include <deque>
#include <memory>
#include <string>
#include <unordered_map>

namespace foreman::broker {

class ControlServer;

/// Who is at the other end (SO_PEERCRED).
struct PeerCredentials {
    pid_t pid = 0;
    uid_t uid = 0;
    gid_t gid = 0;
};

class ControlSession : public ClientEvents, public std::enable_shared_from_this<ControlSession> {
public:
    ControlSession(Broker& broker, ControlServer& server, boost::asio::io_context& io, spawn::unique_fd socket,
                   PeerCredentials peer);
    ~ControlSession() override;

    /// Sends VERSION and starts reading.
    void start();
    /// Sends `FAIL * overloaded` and closes: the connection is one too many.
    void refuse(const std::string& text);
    /// Closes the connection (the broker is going away). Thread-safe.
    void close();

    void granted(lease::Ticket ticket, lease::LeaseId lease, int pid, std::chrono::milliseconds ttl,
                 spawn::unique_fd worker) override;
    void rejected(lease::Ticket ticket, protocol::FailCode code, const std::string& text) override;
    void expired(lease::LeaseId lease, protocol::EndReason reason) override;

private:
    void read();
    void on_read(const boost::system::error_code& ec, std::size_t n);
    void handle(std::string_view line);
    void handle_request(protocol::Request& r);
    void lease(protocol::Request& r);
    void register_pool(protocol::Request& r);
    void unregister_pool(protocol::Request& r);
    bool may_change_pools() const;

    /// Queues `bytes` (with `fd` attached to its first byte) and writes what it can.
    void send(std::string bytes, spawn::unique_fd fd = {});
    void flush();
    /// Stops reading; closes once everything queued is written.
    void close_after_flush();
    void shut();

    struct Outgoing {
        std::string bytes;
        spawn::unique_fd fd;
    };

    Broker& broker_;
    ControlServer& server_;
    boost::asio::strand<boost::asio::io_context::executor_type> strand_;
    boost::asio::posix::stream_descriptor socket_;
    PeerCredentials peer_;
    protocol::LineReader reader_;
    std::deque<Outgoing> out_;
    std::size_t out_offset_ = 0;   ///< bytes of out_.front() already sent
    bool write_waiting_ = false;
    bool handshaken_ = false;
    bool closing_ = false;         ///< no more reading; close when out_ is empty
    bool shut_ = false;
    lease::ClientId client_ = 0;   ///< after the handshake
    /// LEASEs waiting for their answer: ticket → tag, and the tags in flight.
    std::unordered_map<lease::Ticket, std::string> pending_;
    std::unordered_map<std::string, lease::Ticket> tags_;
};

} // namespace foreman::broker
