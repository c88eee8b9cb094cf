#include "client/async_connection.hpp"

#include "client/request_line.hpp"
#include "client/socket_io.hpp"

#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/un.h>

namespace foreman::client {

namespace asio = boost::asio;
using stream = asio::local::stream_protocol;

namespace {

constexpr std::size_t read_chunk = 64 * 1024;

} // namespace

AsyncConnection::AsyncConnection(asio::io_context& io, spawn::unique_fd socket) : socket_(io) {
    socket_.assign(stream(), socket.release());
    socket_.native_non_blocking(true);
}

void AsyncConnection::async_connect(asio::io_context& io, const std::string& socket_path, ConnectHandler handler) {
    Ptr conn;
    try {
        if (socket_path.empty() || socket_path.size() >= sizeof(sockaddr_un::sun_path))
            throw Error(Error::Kind::io, "bad control socket path '" + socket_path + "' (empty or too long)");
        conn = std::make_shared<AsyncConnection>(io, open_unix_stream(true));
    } catch (const Error& e) {
        asio::post(io, [handler = std::move(handler), e] { handler(e, nullptr); });
        return;
    }
    conn->socket_.async_connect(stream::endpoint(socket_path),
                                [conn, socket_path, handler = std::move(handler)](boost::system::error_code ec) mutable {
                                    if (ec) {
                                        conn->socket_.close(ec);
                                        return handler(Error(Error::Kind::io, "cannot connect to " + socket_path +
                                                                                  ": " + ec.message()),
                                                       nullptr);
                                    }
                                    conn->start(std::move(handler));
                                });
}

void AsyncConnection::async_adopt(asio::io_context& io, spawn::unique_fd socket, ConnectHandler handler) {
    // Asio never sets FD_CLOEXEC; a socket made elsewhere might lack it.
    ::fcntl(socket.get(), F_SETFD, FD_CLOEXEC);
    auto conn = std::make_shared<AsyncConnection>(io, std::move(socket));
    asio::post(io, [conn, handler = std::move(handler)]() mutable { conn->start(std::move(handler)); });
}

void AsyncConnection::start(ConnectHandler handler) {
    connect_handler_ = std::move(handler);
    out_.push_back(protocol::version_line());
    write_next();
    read_loop();
}

// ---- requests ------------------------------------------------------------------

void AsyncConnection::send(protocol::Request request, Completion completion) {
    auto self = shared_from_this();
    std::string line;
    try {
        if (demux_.fatal()) throw *demux_.fatal();
        if (!socket_.is_open()) throw Error(Error::Kind::io, "connection closed");
        request.tag = "t" + std::to_string(next_tag_++);
        line = format_request(request);
    } catch (const Error& e) {
        asio::post(socket_.get_executor(), [self, completion = std::move(completion), e] { completion(e, nullptr); });
        return;
    } catch (const std::invalid_argument& e) {
        // A request that cannot be written is the caller's mistake; report it
        // the way the broker would have (bad-request), without sending.
        Error err(request_label(request), protocol::FailCode::bad_request, e.what());
        asio::post(socket_.get_executor(),
                   [self, completion = std::move(completion), err] { completion(err, nullptr); });
        return;
    }
    demux_.sent(request);
    pending_[request.tag] = std::move(completion);
    out_.push_back(std::move(line));
    write_next();
}

void AsyncConnection::async_lease(const std::string& protocol, const LeaseOptions& options, LeaseHandler handler) {
    send(lease_request(protocol, options), [handler = std::move(handler)](std::optional<Error> err, Answer* a) {
        LeaseGrant g;
        if (!err) {
            try {
                g = decode_lease(std::move(*a));
            } catch (const Error& e) {
                err = e;
            }
        }
        handler(std::move(err), std::move(g));
    });
}

void AsyncConnection::async_renew(std::uint64_t lease_id, RenewHandler handler) {
    protocol::Request r{};
    r.verb = protocol::Verb::renew;
    r.lease_id = lease_id;
    send(std::move(r), [handler = std::move(handler)](std::optional<Error> err, Answer* a) {
        std::chrono::milliseconds ttl{0};
        if (!err) {
            try {
                ttl = decode_renew(*a);
            } catch (const Error& e) {
                err = e;
            }
        }
        handler(std::move(err), ttl);
    });
}

void AsyncConnection::async_release(std::uint64_t lease_id, DoneHandler handler) {
    protocol::Request r{};
    r.verb = protocol::Verb::release;
    r.lease_id = lease_id;
    send(std::move(r), [handler = std::move(handler)](std::optional<Error> err, Answer* a) {
        if (!err) {
            try {
                decode_empty(*a);
            } catch (const Error& e) {
                err = e;
            }
        }
        handler(std::move(err));
    });
}

void AsyncConnection::async_status(StatusHandler handler) {
    protocol::Request r{};
    r.verb = protocol::Verb::status;
    send(std::move(r), [handler = std::move(handler)](std::optional<Error> err, Answer* a) {
        boost::json::value v;
        if (!err) {
            try {
                v = decode_status(*a);
            } catch (const Error& e) {
                err = e;
            }
        }
        handler(std::move(err), std::move(v));
    });
}

// ---- writing ---------------------------------------------------------------------

void AsyncConnection::write_next() {
    if (writing_ || out_.empty() || !socket_.is_open()) return;
    writing_ = true;
    asio::async_write(socket_, asio::buffer(out_.front()),
                      [self = shared_from_this()](boost::system::error_code ec, std::size_t) {
                          self->writing_ = false;
                          if (ec) {
                              if (ec == asio::error::operation_aborted) return;
                              // The broker may have said why before hanging up
                              // (a `*` FAIL): read what is left so that wins.
                              self->drain();
                              self->demux_.failed(Error(Error::Kind::io, "send to the broker: " + ec.message()));
                              return self->dispatch();
                          }
                          self->out_.pop_front();
                          self->write_next();
                      });
}

// ---- reading ---------------------------------------------------------------------

void AsyncConnection::read_loop() {
    if (reading_ || !socket_.is_open() || demux_.fatal()) return;
    reading_ = true;
    socket_.async_wait(stream::socket::wait_read, [self = shared_from_this()](boost::system::error_code ec) {
        self->reading_ = false;
        if (ec) {
            if (ec != asio::error::operation_aborted)
                self->demux_.failed(Error(Error::Kind::io, "waiting for the broker: " + ec.message()));
            return self->dispatch();
        }
        self->on_readable();
    });
}

void AsyncConnection::on_readable() {
    drain();
    dispatch();
    read_loop();
}

void AsyncConnection::drain() {
    if (!socket_.is_open()) return;
    std::vector<spawn::unique_fd> fds;
    // Drain what is there: several lines, each LEASE OK with its descriptor.
    while (!demux_.fatal()) {
        char* p = demux_.prepare(read_chunk);
        ssize_t n;
        try {
            n = recv_with_fds(socket_.native_handle(), p, read_chunk, fds);
        } catch (Error& e) {
            demux_.received(0, fds);
            demux_.failed(std::move(e));
            break;
        }
        if (n > 0) {
            demux_.received(static_cast<std::size_t>(n), fds);
            continue;
        }
        int err = errno;
        demux_.received(0, fds);
        if (n < 0 && err == EINTR) continue;
        if (n < 0 && (err == EAGAIN || err == EWOULDBLOCK)) break;
        demux_.failed(Error(Error::Kind::io, n == 0 ? std::string("the broker closed the connection")
                                                    : "receive from the broker: " + std::string(std::strerror(err))));
    }
}

void AsyncConnection::dispatch() {
    auto self = shared_from_this(); // handlers may drop the last outside reference
    if (connect_handler_ && (demux_.broker_version() || demux_.fatal())) {
        auto h = std::exchange(connect_handler_, nullptr);
        if (demux_.fatal()) {
            Error why = *demux_.fatal();
            fail_all(why);
            return h(why, nullptr);
        }
        h(std::nullopt, self);
    }
    // In wire order, so an EXPIRED read before a reply is seen before it.
    while (auto ev = demux_.take_event()) {
        if (ev->expired) {
            if (on_expired_) on_expired_(*ev->expired);
            continue;
        }
        auto it = pending_.find(ev->answer->first);
        if (it == pending_.end()) continue;
        auto completion = std::move(it->second);
        pending_.erase(it);
        completion(std::nullopt, &ev->answer->second);
    }
    if (demux_.fatal()) fail_all(*demux_.fatal());
}

void AsyncConnection::fail_all(const Error& why) {
    boost::system::error_code ignored;
    socket_.close(ignored);
    out_.clear();
    auto pending = std::exchange(pending_, {});
    for (auto& [tag, completion] : pending) {
        demux_.unsent(tag);
        completion(why, nullptr);
    }
}

void AsyncConnection::close() {
    demux_.failed(Error(Error::Kind::io, "connection closed"));
    auto self = shared_from_this();
    if (connect_handler_) std::exchange(connect_handler_, nullptr)(*demux_.fatal(), nullptr);
    fail_all(*demux_.fatal());
}

} // namespace foreman::client
