#pragma once
// The Asio client: one control connection on an io_context, one read loop
// that hands each reply to the handler of its tag and pairs descriptors with
// LEASE OK lines in order (the same ReplyDemux as the blocking Connection).
// Asio has no SCM_RIGHTS API, so the loop waits for readability and calls
// recvmsg on the native handle of a non-blocking, close-on-exec socket.
//
// Not thread-safe: call its members from the thread running the io_context
// (or post them there); handlers run there too. Handlers get
// std::optional<Error>: empty on success, else what the blocking API would
// have thrown. The read loop keeps the object alive until close(), so
// io_context::run() returns only after close() (or a broken connection).

#include "client/answer.hpp"
#include "client/error.hpp"
#include "client/lease_options.hpp"
#include "client/reply_demux.hpp"
#include "spawn/unique_fd.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/json/value.hpp>

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

namespace foreman::client {

class AsyncConnection : public std::enable_shared_from_this<AsyncConnection> {
public:
    using Ptr = std::shared_ptr<AsyncConnection>;
    using ConnectHandler = std::function<void(std::optional<Error>, Ptr)>;
    using LeaseHandler = std::function<void(std::optional<Error>, LeaseGrant)>;
    using RenewHandler = std::function<void(std::optional<Error>, std::chrono::milliseconds)>;
    using StatusHandler = std::function<void(std::optional<Error>, boost::json::value)>;
    using DoneHandler = std::function<void(std::optional<Error>)>;
    using ExpiredHandler = std::function<void(const Expired&)>;

    /// Connects to `socket_path` and does the VERSION handshake; the handler
    /// gets the connection, or the Error Connection::connect would throw.
    static void async_connect(boost::asio::io_context& io, const std::string& socket_path, ConnectHandler handler);
    /// The same over a socket connected already (made non-blocking here).
    static void async_adopt(boost::asio::io_context& io, spawn::unique_fd socket, ConnectHandler handler);

    /// LEASE; the grant holds the worker connection. Releasing it is the
    /// caller's business (async_release), or closing the connection's.
    void async_lease(const std::string& protocol, const LeaseOptions& options, LeaseHandler handler);
    void async_renew(std::uint64_t lease_id, RenewHandler handler);
    void async_release(std::uint64_t lease_id, DoneHandler handler);
    void async_status(StatusHandler handler);

    /// Called with every EXPIRED line as it is read.
    void on_expired(ExpiredHandler handler) { on_expired_ = std::move(handler); }

    /// Closes the socket; handlers still waiting get Error (io,
    /// "connection closed"). Leases not taken with detach end at the broker.
    void close();
    bool is_open() const { return socket_.is_open() && !demux_.fatal(); }
    int fd() { return socket_.native_handle(); }

    /// Use async_connect / async_adopt.
    AsyncConnection(boost::asio::io_context& io, spawn::unique_fd socket);

private:
    using Completion = std::function<void(std::optional<Error>, Answer*)>;

    void start(ConnectHandler handler);
    void send(protocol::Request request, Completion completion);
    void write_next();
    void read_loop();
    void on_readable();
    /// Reads everything the socket holds now into the demux.
    void drain();
    void dispatch();
    void fail_all(const Error& why);

    boost::asio::local::stream_protocol::socket socket_;
    ReplyDemux demux_;
    std::map<std::string, Completion> pending_;
    std::deque<std::string> out_;
    bool writing_ = false;
    bool reading_ = false;
    std::uint64_t next_tag_ = 1;
    ConnectHandler connect_handler_;
    ExpiredHandler on_expired_;
};

} // namespace foreman::client
