#include "client/connection.hpp"

#include "client/request_line.hpp"
#include "client/socket_io.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <poll.h>
#include <stdexcept>

namespace foreman::client {

namespace detail {

/// Everything a Connection is; Leases point at it weakly.
struct ConnectionState {
    /// Bytes one read makes room for.
    static constexpr std::size_t read_chunk = 64 * 1024;

    spawn::unique_fd fd;
    ReplyDemux demux;
    std::uint64_t next_tag = 1;
    std::function<void(const Expired&)> on_expired;
    std::vector<Expired> expired;

    /// One blocking recvmsg; what it finds goes to the demux (a failure
    /// becomes demux.fatal()), EXPIRED events to the callback or the queue.
    void read_once() {
        std::vector<spawn::unique_fd> fds;
        char* p = demux.prepare(read_chunk);
        ssize_t n;
        try {
            do n = recv_with_fds(fd.get(), p, read_chunk, fds);
            while (n < 0 && errno == EINTR);
        } catch (Error& e) {
            demux.received(0, fds);
            demux.failed(std::move(e));
            return;
        }
        if (n <= 0) {
            int err = errno;
            demux.received(0, fds);
            demux.failed(Error(Error::Kind::io, n == 0 ? std::string("the broker closed the connection")
                                                       : "receive from the broker: " + std::string(std::strerror(err))));
            return;
        }
        demux.received(static_cast<std::size_t>(n), fds);
        deliver_expired();
    }

    void deliver_expired() {
        for (const auto& e : demux.take_expired()) {
            if (on_expired) on_expired(e);
            else expired.push_back(e);
        }
    }

    bool readable(int timeout_ms) {
        pollfd p{fd.get(), POLLIN, 0};
        int rc = ::poll(&p, 1, timeout_ms);
        return rc > 0;
    }

    [[noreturn]] void throw_fatal() { throw *demux.fatal(); }

    /// After a failed send: the broker may have said why before it hung up
    /// (a `*` FAIL); read what is left so that reason wins over EPIPE.
    [[noreturn]] void send_failed(Error e) {
        while (!demux.fatal() && readable(0)) read_once();
        demux.failed(std::move(e));
        throw_fatal();
    }

    std::string send(protocol::Request r) {
        if (demux.fatal()) throw_fatal();
        if (r.tag.empty()) r.tag = "t" + std::to_string(next_tag++);
        if (demux.in_flight(r.tag)) throw std::invalid_argument("tag '" + r.tag + "' is still in flight");
        std::string line = format_request(r);
        demux.sent(r);
        try {
            send_all(fd.get(), line);
        } catch (Error& e) {
            send_failed(std::move(e));
        }
        return r.tag;
    }

    Answer wait(const std::string& tag) {
        for (;;) {
            if (auto a = demux.take(tag)) return std::move(*a);
            if (!demux.in_flight(tag)) throw std::invalid_argument("no request with tag '" + tag + "' is waiting");
            if (demux.fatal()) throw_fatal();
            read_once();
        }
    }

    Answer call(protocol::Request r) { return wait(send(std::move(r))); }

    std::chrono::milliseconds renew(std::uint64_t id) {
        protocol::Request r{};
        r.verb = protocol::Verb::renew;
        r.lease_id = id;
        return decode_renew(call(std::move(r)));
    }

    void release(std::uint64_t id) {
        protocol::Request r{};
        r.verb = protocol::Verb::release;
        r.lease_id = id;
        decode_empty(call(std::move(r)));
    }
};

} // namespace detail

namespace {

std::shared_ptr<detail::ConnectionState> lock(const std::weak_ptr<detail::ConnectionState>& conn) {
    auto s = conn.lock();
    if (!s) throw Error(Error::Kind::io, "the lease's connection is closed");
    return s;
}

} // namespace

// ---- Lease ---------------------------------------------------------------------

Lease::Lease(Lease&& other) noexcept
    : conn_(std::move(other.conn_)), id_(other.id_), pid_(other.pid_), ttl_(other.ttl_), fd_(std::move(other.fd_)),
      held_(std::exchange(other.held_, false)) {}

Lease& Lease::operator=(Lease&& other) noexcept {
    if (this != &other) {
        Lease old(std::move(*this)); // releases what this held, on leaving this scope
        conn_ = std::move(other.conn_);
        id_ = other.id_;
        pid_ = other.pid_;
        ttl_ = other.ttl_;
        fd_ = std::move(other.fd_);
        held_ = std::exchange(other.held_, false);
    }
    return *this;
}

Lease::~Lease() {
    if (!held_) return;
    try {
        release();
    } catch (...) {
        // Nothing to do: the lease ended already, or its connection did.
    }
}

std::chrono::milliseconds Lease::renew() {
    ttl_ = lock(conn_)->renew(id_);
    return ttl_;
}

void Lease::release() {
    auto s = lock(conn_);
    held_ = false;
    s->release(id_);
}

// ---- Connection ------------------------------------------------------------------

Connection::Connection(std::shared_ptr<detail::ConnectionState> state) : state_(std::move(state)) {}
Connection::Connection(Connection&&) noexcept = default;
Connection& Connection::operator=(Connection&&) noexcept = default;
Connection::~Connection() = default;

Connection Connection::connect(const std::string& socket_path) { return adopt(connect_unix(socket_path)); }

Connection Connection::adopt(spawn::unique_fd socket) {
    auto s = std::make_shared<detail::ConnectionState>();
    s->fd = std::move(socket);
    // Both sides send VERSION at once; ours need not wait for the broker's.
    try {
        send_all(s->fd.get(), protocol::version_line());
    } catch (Error& e) {
        s->send_failed(std::move(e));
    }
    while (!s->demux.broker_version() && !s->demux.fatal()) s->read_once();
    if (s->demux.fatal()) s->throw_fatal();
    return Connection(std::move(s));
}

Lease Connection::make_lease(LeaseGrant g) {
    Lease l;
    l.conn_ = state_;
    l.id_ = g.lease_id;
    l.pid_ = g.worker_pid;
    l.ttl_ = g.ttl;
    l.fd_ = std::move(g.fd);
    l.held_ = true;
    return l;
}

Lease Connection::lease(const std::string& protocol, const LeaseOptions& options) {
    return wait_lease(send_lease(protocol, options));
}

std::chrono::milliseconds Connection::renew(std::uint64_t lease_id) { return state_->renew(lease_id); }

void Connection::release(std::uint64_t lease_id) { state_->release(lease_id); }

boost::json::value Connection::status() {
    protocol::Request r{};
    r.verb = protocol::Verb::status;
    return decode_status(state_->call(std::move(r)));
}

void Connection::register_pool(const std::string& protocol,
                               const std::vector<std::pair<std::string, std::string>>& keys) {
    protocol::Request r{};
    r.verb = protocol::Verb::register_pool;
    r.protocol = protocol;
    r.keys = keys;
    decode_empty(state_->call(std::move(r)));
}

void Connection::unregister_pool(const std::string& protocol) {
    protocol::Request r{};
    r.verb = protocol::Verb::unregister_pool;
    r.protocol = protocol;
    decode_empty(state_->call(std::move(r)));
}

std::string Connection::send(protocol::Request request) { return state_->send(std::move(request)); }

std::string Connection::send_lease(const std::string& protocol, const LeaseOptions& options) {
    return send(lease_request(protocol, options));
}

Answer Connection::wait(const std::string& tag) { return state_->wait(tag); }

Lease Connection::wait_lease(const std::string& tag) { return make_lease(decode_lease(wait(tag))); }

std::vector<Expired> Connection::take_expired() { return std::exchange(state_->expired, {}); }

void Connection::on_expired(std::function<void(const Expired&)> callback) {
    state_->on_expired = std::move(callback);
    if (state_->on_expired) {
        for (const auto& e : std::exchange(state_->expired, {})) state_->on_expired(e);
    }
}

bool Connection::poll(std::chrono::milliseconds timeout) {
    if (state_->demux.fatal()) state_->throw_fatal();
    auto ms = std::clamp<std::chrono::milliseconds::rep>(timeout.count(), 0, 24 * 3600 * 1000);
    if (!state_->readable(static_cast<int>(ms))) return false;
    state_->read_once();
    if (state_->demux.fatal()) state_->throw_fatal();
    return true;
}

int Connection::fd() const noexcept { return state_ ? state_->fd.get() : -1; }

std::uint64_t Connection::broker_version() const { return state_->demux.broker_version().value_or(0); }

} // namespace foreman::client
