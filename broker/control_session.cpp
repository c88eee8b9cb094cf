#include "broker/control_session.hpp"

#include "broker/control_server.hpp"
#include "broker/log.hpp"
#include "broker/status_json.hpp"
#include "protocol/scm_rights.hpp"

#include <boost/asio/bind_executor.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>

#include <unistd.h>

namespace foreman::broker {

namespace asio = boost::asio;
using protocol::FailCode;
using protocol::Verb;

namespace {
/// Bytes asked of each read: a few pipelined requests. Small, because every
/// connection keeps its buffer (10,000 idle connections must stay cheap).
constexpr std::size_t read_chunk = 1024;
} // namespace

ControlSession::ControlSession(Broker& broker, ControlServer& server, asio::io_context& io, spawn::unique_fd socket,
                               PeerCredentials peer)
    : broker_(broker), server_(server), strand_(asio::make_strand(io)), socket_(strand_), peer_(peer) {
    // Assigned here, not in the initializer: if Asio cannot take it (out of
    // descriptors, its context's reactor not created yet, epoll full), it
    // throws and `socket` still owns the descriptor and closes it.
    socket_.assign(socket.get());
    socket.release();
}

ControlSession::~ControlSession() = default;

void ControlSession::start() {
    asio::dispatch(strand_, [self = shared_from_this()] {
        self->send(protocol::version_line());
        self->read();
    });
}

void ControlSession::refuse(const std::string& text) {
    asio::dispatch(strand_, [self = shared_from_this(), text] {
        // One write, so the client's handshake read sees the refusal too.
        self->send(protocol::version_line() + protocol::fail_line("*", FailCode::overloaded, text));
        self->close_after_flush();
    });
}

void ControlSession::close() {
    asio::dispatch(strand_, [self = shared_from_this()] { self->shut(); });
}

// ---- reading ---------------------------------------------------------------------

void ControlSession::read() {
    socket_.async_read_some(asio::buffer(reader_.prepare(read_chunk), read_chunk),
                            [self = shared_from_this()](const boost::system::error_code& ec, std::size_t n) {
                                self->on_read(ec, n);
                            });
}

void ControlSession::on_read(const boost::system::error_code& ec, std::size_t n) {
    reader_.commit(ec ? 0 : n);
    if (shut_ || closing_) return;
    if (ec) {
        // End of file or a reset: the client is gone; its leases end now.
        shut();
        return;
    }
    std::string_view line;
    for (;;) {
        auto r = reader_.next(line);
        if (r == protocol::LineReader::Result::need_more) break;
        if (r == protocol::LineReader::Result::too_long) {
            send(protocol::fail_line("*", FailCode::bad_request, "line too long"));
            close_after_flush();
            return;
        }
        handle(line);
        if (closing_ || shut_) return;
    }
    read();
}

void ControlSession::handle(std::string_view line) {
    if (!handshaken_) {
        auto version = protocol::parse_version_line(line);
        if (!version || *version != protocol::protocol_version) {
            send(protocol::fail_line("*", FailCode::version,
                                     "supported: " + std::to_string(protocol::protocol_version)));
            close_after_flush();
            return;
        }
        handshaken_ = true;
        client_ = broker_.open_client(weak_from_this());
        return;
    }
    auto parsed = protocol::parse_request(line);
    if (auto* e = std::get_if<protocol::RequestError>(&parsed)) {
        send(protocol::fail_line(e->tag, e->code, e->text));
        return;
    }
    auto& r = std::get<protocol::Request>(parsed);
    if (tags_.count(r.tag)) {
        send(protocol::fail_line(r.tag, FailCode::bad_request, "duplicate tag"));
        return;
    }
    handle_request(r);
}

void ControlSession::handle_request(protocol::Request& r) {
    const auto uid = static_cast<lease::Uid>(peer_.uid);
    switch (r.verb) {
    case Verb::lease:
        lease(r);
        return;
    case Verb::renew:
        if (auto ttl = broker_.renew(r.lease_id, client_, uid))
            send(protocol::ok_line(r.tag, {std::to_string(ttl->count())}));
        else
            send(protocol::fail_line(r.tag, FailCode::no_such_lease,
                                     "no lease " + std::to_string(r.lease_id) + " of yours"));
        return;
    case Verb::release:
        if (broker_.release(r.lease_id, client_, uid))
            send(protocol::ok_line(r.tag));
        else
            send(protocol::fail_line(r.tag, FailCode::no_such_lease,
                                     "no lease " + std::to_string(r.lease_id) + " of yours"));
        return;
    case Verb::status:
        send(protocol::ok_line(r.tag, {status_json(broker_.snapshot())}));
        return;
    case Verb::register_pool:
        register_pool(r);
        return;
    case Verb::unregister_pool:
        unregister_pool(r);
        return;
    }
}

void ControlSession::lease(protocol::Request& r) {
    lease::LeaseRequest rq;
    rq.ticket = server_.next_ticket();
    rq.client = client_;
    rq.uid = static_cast<lease::Uid>(peer_.uid);
    rq.protocol = std::move(r.lease.protocol);
    rq.user = std::move(r.lease.user);
    if (r.lease.ttl_ms) rq.ttl = std::chrono::milliseconds(*r.lease.ttl_ms);
    if (r.lease.wait_ms) rq.wait = std::chrono::milliseconds(*r.lease.wait_ms);
    if (r.lease.version) {
        if (*r.lease.version > UINT32_MAX) {
            send(protocol::fail_line(r.tag, FailCode::version, "no pool serves version " +
                                                                   std::to_string(*r.lease.version)));
            return;
        }
        rq.version = static_cast<std::uint32_t>(*r.lease.version);
    }
    rq.detach = r.lease.detach;
    pending_.emplace(rq.ticket, r.tag);
    tags_.emplace(std::move(r.tag), rq.ticket);
    // The answer comes through granted()/rejected(), perhaps before this returns.
    broker_.lease(rq);
}

bool ControlSession::may_change_pools() const { return peer_.uid == 0 || peer_.uid == ::geteuid(); }

void ControlSession::register_pool(protocol::Request& r) {
    if (!may_change_pools()) {
        send(protocol::fail_line(r.tag, FailCode::denied, "REGISTER is for root and the broker's user only"));
        return;
    }
    if (!is_valid_pool_name(r.protocol)) {
        send(protocol::fail_line(r.tag, FailCode::bad_request, "bad protocol name: 1 to 64 of [A-Za-z0-9_.-]"));
        return;
    }
    PoolConfig pool;
    try {
        pool = parse_pool(r.protocol, r.keys);
    } catch (const ConfigError& e) {
        send(protocol::fail_line(r.tag, FailCode::bad_request, e.what()));
        return;
    }
    std::string error;
    switch (broker_.register_pool(std::move(pool), error)) {
    case PoolResult::ok:
        log_info("REGISTER " + r.protocol + " by uid " + std::to_string(peer_.uid));
        send(protocol::ok_line(r.tag));
        return;
    case PoolResult::exists:
        send(protocol::fail_line(r.tag, FailCode::exists, "pool " + r.protocol + " exists"));
        return;
    case PoolResult::shutting_down:
        send(protocol::fail_line(r.tag, FailCode::shutting_down, "the broker is stopping"));
        return;
    case PoolResult::unknown:
    case PoolResult::invalid:
        send(protocol::fail_line(r.tag, FailCode::bad_request, error));
        return;
    }
}

void ControlSession::unregister_pool(protocol::Request& r) {
    if (!may_change_pools()) {
        send(protocol::fail_line(r.tag, FailCode::denied, "UNREGISTER is for root and the broker's user only"));
        return;
    }
    if (broker_.unregister_pool(r.protocol) == PoolResult::ok) {
        log_info("UNREGISTER " + r.protocol + " by uid " + std::to_string(peer_.uid) + ": it drains");
        send(protocol::ok_line(r.tag));
    } else {
        send(protocol::fail_line(r.tag, FailCode::unknown_protocol, "no pool serves protocol " + r.protocol));
    }
}

// ---- what the broker tells this client (any thread) ------------------------------

void ControlSession::granted(lease::Ticket ticket, lease::LeaseId lease, int pid, std::chrono::milliseconds ttl,
                             spawn::unique_fd worker) {
    asio::dispatch(strand_, [self = shared_from_this(), ticket, lease, pid, ttl, fd = std::move(worker)]() mutable {
        auto it = self->pending_.find(ticket);
        if (it == self->pending_.end()) return; // closed meanwhile: the lease ended with it
        std::string tag = std::move(it->second);
        self->pending_.erase(it);
        self->tags_.erase(tag);
        self->send(protocol::ok_line(tag, {std::to_string(lease), std::to_string(pid), std::to_string(ttl.count())}),
                   std::move(fd));
    });
}

void ControlSession::rejected(lease::Ticket ticket, protocol::FailCode code, const std::string& text) {
    asio::dispatch(strand_, [self = shared_from_this(), ticket, code, text] {
        auto it = self->pending_.find(ticket);
        if (it == self->pending_.end()) return;
        std::string tag = std::move(it->second);
        self->pending_.erase(it);
        self->tags_.erase(tag);
        self->send(protocol::fail_line(tag, code, text));
    });
}

void ControlSession::expired(lease::LeaseId lease, protocol::EndReason reason) {
    asio::dispatch(strand_, [self = shared_from_this(), lease, reason] {
        self->send(protocol::expired_line(lease, reason));
    });
}

// ---- writing ---------------------------------------------------------------------------

void ControlSession::send(std::string bytes, spawn::unique_fd fd) {
    if (shut_) return;
    out_.push_back(Outgoing{std::move(bytes), std::move(fd)});
    if (!write_waiting_) flush();
}

void ControlSession::flush() {
    while (!out_.empty()) {
        Outgoing& o = out_.front();
        std::string_view rest = std::string_view(o.bytes).substr(out_offset_);
        ssize_t n = protocol::send_with_fd(socket_.native_handle(), rest, o.fd ? o.fd.get() : -1);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                write_waiting_ = true;
                socket_.async_wait(asio::posix::stream_descriptor::wait_write,
                                   [self = shared_from_this()](const boost::system::error_code& ec) {
                                       self->write_waiting_ = false;
                                       if (ec || self->shut_) return;
                                       self->flush();
                                   });
                return;
            }
            shut(); // EPIPE, ECONNRESET: the client is gone
            return;
        }
        // The descriptor went with the first byte: the broker's copy closes now.
        o.fd.reset();
        out_offset_ += static_cast<std::size_t>(n);
        if (out_offset_ == o.bytes.size()) {
            out_.pop_front();
            out_offset_ = 0;
        }
    }
    if (closing_) shut();
}

void ControlSession::close_after_flush() {
    closing_ = true;
    if (out_.empty()) shut();
}

void ControlSession::shut() {
    if (shut_) return;
    shut_ = true;
    if (client_ != 0) broker_.close_client(client_); // its leases end at once (unless detached)
    out_.clear();
    pending_.clear();
    tags_.clear();
    boost::system::error_code ignored;
    socket_.close(ignored);
    server_.session_ended(this);
}

} // namespace foreman::broker
