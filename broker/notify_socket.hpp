#pragma once
// The broker's sd_notify socket: an AF_UNIX datagram socket whose datagrams
// are attributed to their sender's pid through SCM_CREDENTIALS (SO_PASSCRED),
// parsed with protocol::parse_notify and handed to one handler.

#include "protocol/notify_message.hpp"

#include <boost/asio/io_context.hpp>

#include <functional>
#include <memory>
#include <string>
#include <sys/types.h>

namespace foreman::broker {

class NotifySocket {
public:
    /// Called once per well-formed datagram, with the sender's pid (as the
    /// kernel saw it, never what the datagram claims).
    using Handler = std::function<void(pid_t pid, const protocol::NotifyMessage&)>;

    /// The largest datagram accepted; longer ones are dropped.
    static constexpr std::size_t max_datagram = 4096;

    /// Binds `path` (a stale file there is removed first) and starts
    /// receiving. Throws std::system_error naming the path if it cannot.
    NotifySocket(boost::asio::io_context& io, std::string path, Handler handler);
    NotifySocket(const NotifySocket&) = delete;
    NotifySocket& operator=(const NotifySocket&) = delete;
    /// Closes (see close()).
    ~NotifySocket();

    const std::string& path() const { return path_; }

    /// Stops receiving, closes the socket and removes its file. Thread-safe
    /// and idempotent. When it returns, no datagram is received any more and
    /// the handler is not called again, except by a call that had already
    /// begun on another thread of the io_context.
    void close();

private:
    struct State;
    std::string path_;
    std::shared_ptr<State> state_; ///< shared with the pending async_wait
};

} // namespace foreman::broker
