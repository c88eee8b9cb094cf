#pragma once
// The blocking client: one control connection, requests answered in any
// order, leases as RAII objects. Not thread-safe: use one Connection from one
// thread at a time (or one Connection per thread).

#include "client/answer.hpp"
#include "client/error.hpp"
#include "client/lease_options.hpp"
#include "client/reply_demux.hpp"
#include "protocol/control_line.hpp"
#include "spawn/unique_fd.hpp"

#include <boost/json/value.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace foreman::client {

class Connection;
namespace detail {
struct ConnectionState;
}

/// A granted lease. Its destructor releases it if still held (errors are
/// swallowed) and closes the worker connection unless take_fd() took it.
/// It refers to its Connection weakly: once the Connection is gone (which
/// ends every lease not taken with detach) it only closes the descriptor.
class Lease {
public:
    Lease() = default;
    Lease(Lease&& other) noexcept;
    Lease& operator=(Lease&& other) noexcept;
    ~Lease();

    std::uint64_t id() const noexcept { return id_; }
    pid_t worker_pid() const noexcept { return pid_; }
    /// The ttl of the grant or of the last renew().
    std::chrono::milliseconds ttl() const noexcept { return ttl_; }
    /// Whether this object will release the lease (false after release(),
    /// forget(), or when moved from).
    bool held() const noexcept { return held_; }

    /// The connected stream socket to the worker (-1 after take_fd()).
    int fd() const noexcept { return fd_.get(); }
    spawn::unique_fd take_fd() noexcept { return std::move(fd_); }

    /// RENEW: returns (and keeps) the new ttl. Throws Error.
    std::chrono::milliseconds renew();
    /// RELEASE. The lease is no longer held afterwards, even when this throws
    /// (no-such-lease: it had ended already). Throws Error.
    void release();
    /// Stops holding without RELEASE: the destructor will leave the lease
    /// alone (it ended by EXPIRED, or it is detached and should live on).
    void forget() noexcept { held_ = false; }

private:
    friend class Connection;

    std::weak_ptr<detail::ConnectionState> conn_;
    std::uint64_t id_ = 0;
    pid_t pid_ = 0;
    std::chrono::milliseconds ttl_{0};
    spawn::unique_fd fd_;
    bool held_ = false;
};

class Connection {
public:
    /// Connects to the control socket at `socket_path` and does the VERSION
    /// handshake. Throws Error: io when it cannot connect, refused with
    /// FailCode::version when the broker does not speak our version (or
    /// another code, e.g. overloaded at max_clients).
    static Connection connect(const std::string& socket_path);
    /// The same over a socket connected already (a socketpair in tests).
    static Connection adopt(spawn::unique_fd socket);

    /// A moved-from Connection may only be destroyed or assigned to.
    Connection(Connection&&) noexcept;
    Connection& operator=(Connection&&) noexcept;
    ~Connection();

    // ---- one request, waiting for its reply (each throws Error) ----------------

    Lease lease(const std::string& protocol, const LeaseOptions& options = {});
    /// The new ttl.
    std::chrono::milliseconds renew(std::uint64_t lease_id);
    void release(std::uint64_t lease_id);
    boost::json::value status();
    void register_pool(const std::string& protocol, const std::vector<std::pair<std::string, std::string>>& keys);
    void unregister_pool(const std::string& protocol);

    // ---- pipelining ----------------------------------------------------------------------

    /// Sends `request` without waiting; a tag ("t1", "t2", ...) is chosen
    /// when request.tag is empty. Returns the tag. Throws std::invalid_argument
    /// (see format_request) or Error.
    std::string send(protocol::Request request);
    std::string send_lease(const std::string& protocol, const LeaseOptions& options = {});
    /// Reads until the reply to `tag` arrives and returns it, OK or FAIL (a
    /// FAIL is not thrown; check_ok() and the decode_* functions of
    /// answer.hpp do that). Other replies are kept for their own wait().
    /// Throws Error when the connection fails first (including a `*` FAIL).
    Answer wait(const std::string& tag);
    /// wait() for a LEASE, decoded into a Lease. Throws Error.
    Lease wait_lease(const std::string& tag);

    // ---- events ----------------------------------------------------------------------------

    /// EXPIRED events read so far and not yet taken (none go here while an
    /// on_expired callback is set).
    std::vector<Expired> take_expired();
    /// Called with each EXPIRED as it is read, from within whichever call is
    /// reading. It must not call back into this Connection.
    void on_expired(std::function<void(const Expired&)> callback);
    /// Waits up to `timeout` for bytes from the broker and handles them
    /// (EXPIRED events, replies to pipelined requests). Returns whether
    /// anything was read. Throws Error once the connection has failed.
    bool poll(std::chrono::milliseconds timeout);

    /// The control socket, e.g. for poll(2); do not read from it.
    int fd() const noexcept;
    std::uint64_t broker_version() const;

private:
    explicit Connection(std::shared_ptr<detail::ConnectionState> state);
    Lease make_lease(LeaseGrant grant);

    std::shared_ptr<detail::ConnectionState> state_; ///< shared with its Leases, weakly
};

} // namespace foreman::client
