#pragma once
// The HTTP side of the metrics (metrics_listen): `GET /metrics` answers the
// text a render function returns; anything else gets 404 or 405. Every
// connection is asynchronous on one io_context and bounded in time and
// size, so a slow or hostile client costs a descriptor for a while, never a
// thread: nothing it does can hold up the broker's other events.

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>

namespace foreman::broker {

/// The bounds of one HTTP connection (named policies, one place).
struct MetricsServerLimits {
    /// To receive a whole request head, from the connection's start or the
    /// previous response: a client that trickles bytes is cut off after it.
    std::chrono::milliseconds read_timeout{10'000};
    /// To send a whole response to a client that does not read it.
    std::chrono::milliseconds write_timeout{10'000};
    /// Bytes of request line and headers; beyond: 431 and the connection closes.
    std::uint32_t header_limit = 8192;
    /// Connections served at once; more are closed at once (a scraper
    /// retries on its next interval).
    std::size_t max_connections = 64;
};

class MetricsServer {
public:
    using Render = std::function<std::string()>;

    /// Binds `listen` ("host:port" as config.cpp checks it; port 0 picks a
    /// free port) and listens. Throws std::runtime_error naming `listen` when
    /// the host does not resolve or the address cannot be bound.
    MetricsServer(boost::asio::io_context& io, const std::string& listen, Render render,
                  MetricsServerLimits limits = {});
    ~MetricsServer();
    MetricsServer(const MetricsServer&) = delete;
    MetricsServer& operator=(const MetricsServer&) = delete;

    /// Starts accepting (on the io_context's thread from here on).
    void start();
    /// Stops accepting and closes every connection. Call on the io_context's
    /// thread, or once it no longer runs.
    void close();

    /// The address bound (with the port picked when 0 was asked).
    const boost::asio::ip::tcp::endpoint& local_endpoint() const { return local_; }

private:
    struct Shared;
    class Session;
    void accept();
    void on_readable();

    boost::asio::ip::tcp::acceptor acceptor_;
    boost::asio::ip::tcp::endpoint local_;
    /// What sessions need, shared with them: they may outlive the server
    /// (their handlers are destroyed with the io_context).
    std::shared_ptr<Shared> shared_;
};

/// "127.0.0.1:9100", "[::1]:9100".
std::string endpoint_text(const boost::asio::ip::tcp::endpoint& endpoint);

} // namespace foreman::broker
