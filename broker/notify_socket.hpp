#pragma once
// The broker's sd_notify socket: an AF_UNIX datagram socket whose datagrams
// are attributed to their sender's pid through SCM_CREDENTIALS (SO_PASSCRED),
// parsed with protocol::parse_notify and handed to one handler.
//
// It reads on a thread of its own, with poll() and recvmmsg(), and hands
// every datagram of one wake-up to the handler at once: 1,000 workers
// heartbeating every 100 ms are 10,000 datagrams a second, and going through
// the io_context (epoll, a recvmsg per datagram and one more to see EAGAIN,
// a hand-off between io threads) cost three times more broker CPU
// (bench/RESULTS.md). Under a stream of datagrams (wake-ups less than 1 ms
// apart) it also waits 800 us before the next read, so that one wake-up takes
// several: a READY=1 can then wait up to 800 us longer, only while datagrams
// pour in; a quiet socket is read at once.

#include "protocol/notify_message.hpp"
#include "spawn/unique_fd.hpp"

#include <functional>
#include <string>
#include <sys/types.h>
#include <thread>
#include <vector>

namespace foreman::broker {

class NotifySocket {
public:
    struct Datagram {
        pid_t pid; ///< the sender, as the kernel saw it, never what the datagram claims
        protocol::NotifyMessage message;
    };
    /// Called on the socket's thread with the well-formed datagrams of one
    /// wake-up, in arrival order; calls never overlap.
    using Handler = std::function<void(const std::vector<Datagram>&)>;

    /// The largest datagram accepted; longer ones are dropped.
    static constexpr std::size_t max_datagram = 4096;
    /// Datagrams read per recvmmsg().
    static constexpr std::size_t batch = 32;

    /// Binds `path` (a stale socket there is removed first) and starts
    /// receiving. Throws std::system_error naming the path if it cannot.
    NotifySocket(std::string path, Handler handler);
    NotifySocket(const NotifySocket&) = delete;
    NotifySocket& operator=(const NotifySocket&) = delete;
    /// Closes (see close()).
    ~NotifySocket();

    const std::string& path() const { return path_; }

    /// Stops the thread, closes the socket and removes its file. Idempotent;
    /// must not be called from the handler. When it returns the handler is
    /// not running and will not be called again.
    void close();

private:
    void run();
    void receive(std::vector<Datagram>& out);

    std::string path_;
    Handler handler_;
    spawn::unique_fd socket_;
    spawn::unique_fd stop_; ///< an eventfd: written by close()
    std::thread thread_;
    bool closed_ = false;
};

} // namespace foreman::broker
