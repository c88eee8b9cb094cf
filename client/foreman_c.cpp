// The C API (client/foreman.h) over the blocking C++ client. Every entry
// point catches everything: a C caller cannot unwind a C++ exception.

#include "client/foreman.h"

#include "client/broker_address.hpp"
#include "client/connection.hpp"
#include "client/socket_io.hpp"
#include "protocol/end_reason.hpp"
#include "protocol/fail_code.hpp"

#include <cerrno>
#include <climits>
#include <deque>
#include <fcntl.h>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <sys/socket.h>
#include <unistd.h>

namespace client = foreman::client;
namespace protocol = foreman::protocol;
using foreman::spawn::unique_fd;

struct foreman_conn {
    std::optional<client::Connection> conn; ///< empty when connecting failed
    foreman_error connect_code = FOREMAN_OK; ///< why it is empty
    std::string connect_error;
    std::string last_error; ///< the last call's failure, "" after a success
    std::string fail_text;  ///< the broker's text of the last call's FAIL
    std::deque<foreman_expired> expired;
};

namespace {

foreman_error from_fail_code(protocol::FailCode code) {
    using protocol::FailCode;
    switch (code) {
    case FailCode::bad_request: return FOREMAN_ERR_BAD_REQUEST;
    case FailCode::version: return FOREMAN_ERR_VERSION;
    case FailCode::unknown_protocol: return FOREMAN_ERR_UNKNOWN_PROTOCOL;
    case FailCode::busy: return FOREMAN_ERR_BUSY;
    case FailCode::overloaded: return FOREMAN_ERR_OVERLOADED;
    case FailCode::spawn_failed: return FOREMAN_ERR_SPAWN_FAILED;
    case FailCode::no_such_lease: return FOREMAN_ERR_NO_SUCH_LEASE;
    case FailCode::denied: return FOREMAN_ERR_DENIED;
    case FailCode::exists: return FOREMAN_ERR_EXISTS;
    case FailCode::shutting_down: return FOREMAN_ERR_SHUTTING_DOWN;
    }
    return FOREMAN_ERR_PROTOCOL;
}

foreman_expiry from_end_reason(protocol::EndReason reason) {
    using protocol::EndReason;
    switch (reason) {
    case EndReason::ttl: return FOREMAN_EXPIRED_TTL;
    case EndReason::worker_ready: return FOREMAN_EXPIRED_WORKER_READY;
    case EndReason::worker_exit: return FOREMAN_EXPIRED_WORKER_EXIT;
    case EndReason::processtime: return FOREMAN_EXPIRED_PROCESSTIME;
    case EndReason::shutdown: return FOREMAN_EXPIRED_SHUTDOWN;
    case EndReason::released:
    case EndReason::holder_closed: break; // never the reason of an EXPIRED line
    }
    return FOREMAN_EXPIRED_WORKER_EXIT;
}

foreman_error record(foreman_conn& c, foreman_error code, const char* message) noexcept {
    try {
        c.last_error = message;
    } catch (...) {
        c.last_error.clear(); // out of memory: the code still says what happened
    }
    return code;
}

/// A `*` FAIL fails the whole connection and reaches us only as an Error
/// whose what() is "<label>: <code>: <text>" (client/error.hpp); its labels
/// ("broker", "VERSION") hold no ": ", so the text is what follows the code.
std::string text_of_connection_fail(const client::Error& e) {
    std::string what = e.what();
    std::string marker = ": " + std::string(protocol::to_string(e.code())) + ": ";
    auto at = what.find(marker);
    return at == std::string::npos ? std::string() : what.substr(at + marker.size());
}

/// The client library reports EOF and other I/O failures alike (Kind::io);
/// the socket itself tells them apart: a peer that hung up reads as 0 bytes.
foreman_error classify_io(int fd) {
    char byte;
    ssize_t n;
    do n = ::recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    return n == 0 ? FOREMAN_ERR_EOF : FOREMAN_ERR_IO;
}

/// Runs `body` with the connection's error state reset, turning every
/// exception into a code and a message.
template <class Body>
foreman_error guarded(foreman_conn& c, int fd, Body&& body) noexcept {
    c.last_error.clear();
    c.fail_text.clear();
    try {
        return body();
    } catch (const client::Error& e) {
        switch (e.kind()) {
        case client::Error::Kind::refused:
            try {
                if (c.fail_text.empty()) c.fail_text = text_of_connection_fail(e);
            } catch (...) {
            }
            return record(c, from_fail_code(e.code()), e.what());
        case client::Error::Kind::io:
            return record(c, fd >= 0 ? classify_io(fd) : FOREMAN_ERR_IO, e.what());
        case client::Error::Kind::protocol: return record(c, FOREMAN_ERR_PROTOCOL, e.what());
        }
        return record(c, FOREMAN_ERR_INTERNAL, e.what());
    } catch (const std::invalid_argument& e) {
        return record(c, FOREMAN_ERR_INVALID, e.what());
    } catch (const std::bad_alloc&) {
        return record(c, FOREMAN_ERR_NOMEM, "out of memory");
    } catch (const std::exception& e) {
        return record(c, FOREMAN_ERR_INTERNAL, e.what());
    } catch (...) {
        return record(c, FOREMAN_ERR_INTERNAL, "unknown exception");
    }
}

/// The connection's calls: a connection whose connect failed keeps failing
/// the same way.
template <class Body>
foreman_error with_connection(foreman_conn* c, Body&& body) noexcept {
    if (!c) return FOREMAN_ERR_INVALID;
    if (!c->conn) {
        c->fail_text.clear();
        return record(*c, c->connect_code, ("not connected: " + c->connect_error).c_str());
    }
    return guarded(*c, c->conn->fd(), [&] { return body(*c->conn); });
}

/// Waits for the reply to `tag`, keeping a FAIL's own text for foreman_fail_text().
client::Answer wait_reply(foreman_conn& c, const std::string& tag) {
    client::Answer a = c.conn->wait(tag);
    if (a.reply.kind == protocol::Reply::Kind::fail) c.fail_text = a.reply.text;
    return a;
}

} // namespace

extern "C" {

foreman_error foreman_connect(const char* socket_path, foreman_conn** out) {
    if (!out) return FOREMAN_ERR_INVALID;
    *out = new (std::nothrow) foreman_conn;
    if (!*out) return FOREMAN_ERR_NOMEM;
    foreman_conn& c = **out;
    // A copy of the socket outlives a failed handshake, so classify_io can
    // still look at it.
    unique_fd probe;
    foreman_error rc = guarded(c, -1, [&] {
        std::optional<std::string> option;
        if (socket_path && *socket_path) option = socket_path;
        std::string path = client::broker_address(option);
        unique_fd fd;
        try {
            fd = client::connect_unix(path);
        } catch (const client::Error& e) {
            return record(c, FOREMAN_ERR_CONNECT, e.what());
        }
        probe.reset(::fcntl(fd.get(), F_DUPFD_CLOEXEC, 0));
        c.conn.emplace(client::Connection::adopt(std::move(fd)));
        return FOREMAN_OK;
    });
    if (rc == FOREMAN_ERR_IO && probe) rc = classify_io(probe.get());
    if (rc != FOREMAN_OK) {
        c.conn.reset();
        c.connect_code = rc;
        try {
            c.connect_error = c.last_error;
        } catch (...) {
        }
    }
    return rc;
}

void foreman_close(foreman_conn* c) { delete c; }

foreman_error foreman_lease(foreman_conn* c, const char* protocol_name, const char* user, uint64_t ttl_ms,
                            int64_t wait_ms, int detach, foreman_grant* grant) {
    if (grant) grant->fd = -1;
    if (!c || !grant) return FOREMAN_ERR_INVALID;
    return with_connection(c, [&](client::Connection& conn) {
        if (!protocol_name || !*protocol_name) throw std::invalid_argument("LEASE: the protocol is empty");
        client::LeaseOptions options;
        if (user) options.user = user;
        if (ttl_ms > 0) options.ttl_ms = ttl_ms;
        if (wait_ms >= 0) options.wait_ms = static_cast<std::uint64_t>(wait_ms);
        options.detach = detach != 0;
        client::LeaseGrant g = client::decode_lease(wait_reply(*c, conn.send_lease(protocol_name, options)));
        grant->lease_id = g.lease_id;
        grant->worker_pid = g.worker_pid;
        grant->ttl_ms = static_cast<uint64_t>(g.ttl.count());
        grant->fd = g.fd.release();
        return FOREMAN_OK;
    });
}

foreman_error foreman_renew(foreman_conn* c, uint64_t lease_id, uint64_t* ttl_ms) {
    return with_connection(c, [&](client::Connection& conn) {
        protocol::Request r{};
        r.verb = protocol::Verb::renew;
        r.lease_id = lease_id;
        auto ttl = client::decode_renew(wait_reply(*c, conn.send(std::move(r))));
        if (ttl_ms) *ttl_ms = static_cast<uint64_t>(ttl.count());
        return FOREMAN_OK;
    });
}

foreman_error foreman_release(foreman_conn* c, uint64_t lease_id) {
    return with_connection(c, [&](client::Connection& conn) {
        protocol::Request r{};
        r.verb = protocol::Verb::release;
        r.lease_id = lease_id;
        client::decode_empty(wait_reply(*c, conn.send(std::move(r))));
        return FOREMAN_OK;
    });
}

foreman_error foreman_poll(foreman_conn* c, int timeout_ms) {
    return with_connection(c, [&](client::Connection& conn) {
        if (timeout_ms >= 0) {
            conn.poll(std::chrono::milliseconds(timeout_ms));
        } else {
            while (!conn.poll(std::chrono::hours(24))) {
            }
        }
        return FOREMAN_OK;
    });
}

int foreman_take_expired(foreman_conn* c, foreman_expired* out) {
    if (!c || !out) return 0;
    try {
        if (c->conn) {
            for (const auto& e : c->conn->take_expired()) c->expired.push_back({e.lease_id, from_end_reason(e.reason)});
        }
    } catch (...) {
        // Out of memory while queueing: what was taken before is still there.
    }
    if (c->expired.empty()) return 0;
    *out = c->expired.front();
    c->expired.pop_front();
    return 1;
}

int foreman_fd(const foreman_conn* c) { return c && c->conn ? c->conn->fd() : -1; }

const char* foreman_last_error(const foreman_conn* c) {
    return c ? c->last_error.c_str() : "no connection (out of memory, or NULL)";
}

const char* foreman_fail_text(const foreman_conn* c) { return c ? c->fail_text.c_str() : ""; }

const char* foreman_strerror(int code) {
    switch (code) {
    case FOREMAN_OK: return "success";
    case FOREMAN_ERR_BAD_REQUEST: return "bad-request: the broker refused the request as malformed";
    case FOREMAN_ERR_VERSION: return "version: the broker does not speak protocol 1000";
    case FOREMAN_ERR_UNKNOWN_PROTOCOL: return "unknown-protocol: no pool serves that protocol";
    case FOREMAN_ERR_BUSY: return "busy: no worker came free in time";
    case FOREMAN_ERR_OVERLOADED: return "overloaded: the broker's queue or client limit is full";
    case FOREMAN_ERR_SPAWN_FAILED: return "spawn-failed: the pool cannot start workers now";
    case FOREMAN_ERR_NO_SUCH_LEASE: return "no-such-lease: the lease is unknown, ended, or not yours";
    case FOREMAN_ERR_DENIED: return "denied: this user may not use that pool";
    case FOREMAN_ERR_EXISTS: return "exists: the pool exists already";
    case FOREMAN_ERR_SHUTTING_DOWN: return "shutting-down: the broker is stopping";
    case FOREMAN_ERR_CONNECT: return "cannot connect to the broker's control socket";
    case FOREMAN_ERR_EOF: return "the broker closed the connection";
    case FOREMAN_ERR_IO: return "sending to or receiving from the broker failed";
    case FOREMAN_ERR_PROTOCOL: return "the broker sent a reply outside the protocol";
    case FOREMAN_ERR_INVALID: return "invalid argument";
    case FOREMAN_ERR_NOMEM: return "out of memory";
    case FOREMAN_ERR_INTERNAL: return "internal error in the foreman client library";
    }
    return "unknown foreman error";
}

const char* foreman_expiry_name(int reason) {
    switch (reason) {
    case FOREMAN_EXPIRED_TTL:
    case FOREMAN_EXPIRED_WORKER_READY:
    case FOREMAN_EXPIRED_WORKER_EXIT:
    case FOREMAN_EXPIRED_PROCESSTIME:
    case FOREMAN_EXPIRED_SHUTDOWN: break;
    default: return "unknown";
    }
    static const protocol::EndReason reasons[] = {protocol::EndReason::ttl, protocol::EndReason::worker_ready,
                                                  protocol::EndReason::worker_exit, protocol::EndReason::processtime,
                                                  protocol::EndReason::shutdown};
    // to_string returns views of string literals: NUL-terminated.
    return protocol::to_string(reasons[reason]).data();
}

} // extern "C"
