#include "broker/metrics_server.hpp"

#include "broker/log.hpp"
#include "broker/metrics.hpp"

#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include <cerrno>
#include <cstring>
#include <optional>
#include <sys/socket.h>
#include <unistd.h>
#include <unordered_map>
#include <vector>

namespace foreman::broker {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

/// The one path served.
constexpr std::string_view metrics_path = "/metrics";
/// After an error response the broker reads (and drops) what the client
/// still sends, so closing does not reset the connection before the client
/// has read the response; for at most this long.
constexpr std::chrono::milliseconds linger_timeout{1000};
/// Out of descriptors, accepting again at once would spin: wait this long.
constexpr std::chrono::milliseconds accept_retry_delay{100};

/// "host:port" → the endpoint to bind; throws naming `listen`.
tcp::endpoint resolve_listen(asio::io_context& io, const std::string& listen) {
    auto colon = listen.rfind(':');
    if (colon == std::string::npos || colon == 0)
        throw std::runtime_error("metrics_listen=" + listen + ": not host:port");
    std::string host = listen.substr(0, colon);
    std::string port = listen.substr(colon + 1);
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    boost::system::error_code ec;
    tcp::resolver resolver(io);
    auto results = resolver.resolve(host, port, tcp::resolver::passive | tcp::resolver::numeric_service, ec);
    if (ec || results.empty())
        throw std::runtime_error("metrics_listen=" + listen + ": cannot resolve " + host + ": " +
                                 (ec ? ec.message() : std::string("no address")));
    return results.begin()->endpoint();
}

} // namespace

std::string endpoint_text(const tcp::endpoint& endpoint) {
    auto address = endpoint.address();
    std::string host = address.is_v6() ? "[" + address.to_string() + "]" : address.to_string();
    return host + ":" + std::to_string(endpoint.port());
}

struct MetricsServer::Shared {
    Render render;
    MetricsServerLimits limits;
    /// Live sessions, for close() and the connection cap. Touched on the
    /// io_context's thread only (or once it no longer runs).
    std::unordered_map<Session*, std::weak_ptr<Session>> sessions;
    bool closed = false;
};

/// One HTTP connection: read a request head, answer, repeat while the
/// client keeps the connection alive.
class MetricsServer::Session : public std::enable_shared_from_this<Session> {
public:
    Session(std::shared_ptr<Shared> shared, tcp::socket socket)
        : shared_(std::move(shared)), stream_(std::move(socket)),
          // Room for one request head and a little of what follows it.
          buffer_(shared_->limits.header_limit + 1024) {}
    ~Session() { shared_->sessions.erase(this); }

    void start() {
        shared_->sessions.emplace(this, weak_from_this());
        read();
    }

    void close() {
        boost::system::error_code ignored;
        stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
        stream_.close();
    }

private:
    void read() {
        parser_.emplace();
        parser_->header_limit(shared_->limits.header_limit);
        stream_.expires_after(shared_->limits.read_timeout);
        http::async_read(stream_, buffer_, *parser_,
                         [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_read(ec); });
    }

    void on_read(beast::error_code ec) {
        if (ec == http::error::end_of_stream) return shutdown(); // closed between requests
        if (ec == http::error::header_limit || ec == http::error::buffer_overflow)
            return answer_error(http::status::request_header_fields_too_large, "request header too large\n");
        if (ec && ec.category() == beast::http::make_error_code(http::error::bad_target).category())
            return answer_error(http::status::bad_request, "bad request: " + ec.message() + "\n");
        if (ec) {
            // Timeout (the stream closed itself), reset, or close(): nothing to answer.
            if (ec == beast::error::timeout) log_debug("metrics: a client sent no complete request in time: closed");
            return;
        }
        const auto& request = parser_->get();
        std::string_view target = request.target();
        target = target.substr(0, target.find('?')); // a scrape config may add parameters
        if (target != metrics_path) return answer(http::status::not_found, "not found; try /metrics\n", request);
        if (request.method() != http::verb::get)
            return answer(http::status::method_not_allowed, "only GET is served\n", request);
        std::string body;
        try {
            body = shared_->render();
        } catch (const std::exception& e) {
            log_error(std::string("metrics: rendering failed: ") + e.what());
            return answer_error(http::status::internal_server_error, "rendering failed\n");
        }
        answer(http::status::ok, std::move(body), request);
    }

    template <class Request>
    void answer(http::status status, std::string body, const Request& request) {
        bool keep_alive = request.keep_alive();
        auto& res = response_.emplace(status, request.version());
        res.set(http::field::content_type, status == http::status::ok ? metrics::content_type
                                                                     : std::string_view("text/plain"));
        if (status == http::status::method_not_allowed) res.set(http::field::allow, "GET");
        res.keep_alive(keep_alive);
        res.body() = std::move(body);
        res.prepare_payload();
        write(keep_alive);
    }

    /// Answers and closes: the request could not be read as one.
    void answer_error(http::status status, std::string body) {
        auto& res = response_.emplace(status, 11);
        res.set(http::field::content_type, "text/plain");
        res.keep_alive(false);
        res.body() = std::move(body);
        res.prepare_payload();
        write(false);
    }

    void write(bool keep_alive) {
        stream_.expires_after(shared_->limits.write_timeout);
        http::async_write(stream_, *response_,
                          [self = shared_from_this(), keep_alive](beast::error_code ec, std::size_t) {
                              if (ec) return;
                              if (keep_alive) self->read();
                              else self->shutdown();
                          });
    }

    /// Ends our side and drops what the client still sends until it closes
    /// too (or linger_timeout passes), so our response is not lost to a reset.
    void shutdown() {
        boost::system::error_code ignored;
        stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
        stream_.expires_after(linger_timeout);
        drain();
    }

    void drain() {
        stream_.async_read_some(asio::buffer(scratch_), [self = shared_from_this()](beast::error_code ec, std::size_t) {
            if (!ec) self->drain();
        });
    }

    std::shared_ptr<Shared> shared_;
    beast::tcp_stream stream_;
    beast::flat_buffer buffer_;
    std::optional<http::request_parser<http::empty_body>> parser_;
    std::optional<http::response<http::string_body>> response_;
    char scratch_[512];
};

MetricsServer::MetricsServer(asio::io_context& io, const std::string& listen, Render render,
                             MetricsServerLimits limits)
    : acceptor_(io), shared_(std::make_shared<Shared>()) {
    shared_->render = std::move(render);
    shared_->limits = limits;
    tcp::endpoint endpoint = resolve_listen(io, listen);
    // Created close-on-exec here: Asio never sets FD_CLOEXEC (workers must not inherit it).
    int fd = ::socket(endpoint.protocol().family(), SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, IPPROTO_TCP);
    if (fd < 0) throw std::runtime_error("metrics_listen=" + listen + ": socket: " + std::strerror(errno));
    boost::system::error_code ec;
    acceptor_.assign(endpoint.protocol(), fd, ec);
    if (ec) {
        ::close(fd);
        throw std::runtime_error("metrics_listen=" + listen + ": " + ec.message());
    }
    acceptor_.set_option(tcp::acceptor::reuse_address(true), ec);
    if (!ec) acceptor_.bind(endpoint, ec);
    if (ec) throw std::runtime_error("metrics_listen=" + listen + ": cannot bind " + endpoint_text(endpoint) + ": " +
                                     ec.message());
    acceptor_.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) throw std::runtime_error("metrics_listen=" + listen + ": cannot listen: " + ec.message());
    local_ = acceptor_.local_endpoint();
}

MetricsServer::~MetricsServer() { close(); }

void MetricsServer::start() { accept(); }

void MetricsServer::accept() {
    acceptor_.async_wait(tcp::acceptor::wait_read, [this](const boost::system::error_code& ec) {
        if (ec) return; // closed
        on_readable();
    });
}

void MetricsServer::on_readable() {
    for (;;) {
        // accept4: close-on-exec from the start, as the listener.
        int fd = ::accept4(acceptor_.native_handle(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            log_warning(std::string("metrics: accept: ") + std::strerror(errno));
            // Out of descriptors (EMFILE): the pending connection stays readable; retry later.
            auto timer = std::make_shared<asio::steady_timer>(acceptor_.get_executor(), accept_retry_delay);
            timer->async_wait([this, timer](const boost::system::error_code& e) {
                if (!e && !shared_->closed) accept();
            });
            return;
        }
        if (shared_->closed || shared_->sessions.size() >= shared_->limits.max_connections) {
            log_debug("metrics: " + std::to_string(shared_->sessions.size()) + " connections open: one refused");
            ::close(fd);
            continue;
        }
        tcp::socket socket(acceptor_.get_executor());
        boost::system::error_code ec;
        socket.assign(local_.protocol(), fd, ec);
        if (ec) {
            ::close(fd);
            continue;
        }
        std::make_shared<Session>(shared_, std::move(socket))->start();
    }
    accept();
}

void MetricsServer::close() {
    if (shared_->closed) return;
    shared_->closed = true;
    boost::system::error_code ignored;
    acceptor_.close(ignored);
    std::vector<std::shared_ptr<Session>> open;
    for (auto& [p, weak] : shared_->sessions)
        if (auto s = weak.lock()) open.push_back(std::move(s));
    for (auto& s : open) s->close();
}

} // namespace foreman::broker
