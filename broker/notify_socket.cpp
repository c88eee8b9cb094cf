#include "broker/notify_socket.hpp"

#include "broker/log.hpp"
#include "spawn/unique_fd.hpp"

#include <boost/asio/local/datagram_protocol.hpp>

#include <array>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <optional>
#include <system_error>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

namespace foreman::broker {
namespace {

/// Datagrams handled per wake-up before waiting again, so a flooding sender
/// cannot keep one thread of the io_context to itself.
constexpr int receive_batch = 64;

/// Room for SCM_RIGHTS descriptors: libsystemd's BARRIER=1 sends one; a
/// sender passing more gets them dropped by the kernel (MSG_CTRUNC), which
/// closes the ones that did not fit.
constexpr std::size_t max_passed_fds = 16;

[[noreturn]] void throw_errno(int err, const std::string& what) {
    throw std::system_error(err, std::system_category(), what);
}

} // namespace

struct NotifySocket::State : std::enable_shared_from_this<State> {
    State(boost::asio::io_context& io, Handler h) : socket(io), handler(std::move(h)) {}

    /// Serialises use of `socket` between the receiving handler and close(),
    /// which may run on another thread.
    std::mutex mutex;
    boost::asio::local::datagram_protocol::socket socket;
    std::atomic<bool> closed{false};
    Handler handler;

    /// Waits for the next datagram. Called with `mutex` held; only one wait
    /// is ever outstanding, so receives and handler calls never overlap.
    void arm() {
        socket.async_wait(boost::asio::socket_base::wait_read,
                          [self = shared_from_this()](const boost::system::error_code& ec) {
                              self->on_readable(ec);
                          });
    }

    void on_readable(const boost::system::error_code& ec) {
        if (ec) {
            if (ec != boost::asio::error::operation_aborted)
                log_error("notify socket: waiting for datagrams failed: " + ec.message());
            return;
        }
        for (int i = 0; i < receive_batch; ++i) {
            std::optional<std::pair<pid_t, protocol::NotifyMessage>> got;
            {
                std::lock_guard lock(mutex);
                if (closed) return;
                if (!receive_one(got)) break;
            }
            if (got && !closed) handler(got->first, got->second);
        }
        std::lock_guard lock(mutex);
        if (!closed) arm();
    }

    /// Receives one datagram; false when there is none. `got` is set when the
    /// datagram was well-formed and attributable.
    bool receive_one(std::optional<std::pair<pid_t, protocol::NotifyMessage>>& got) {
        std::array<char, max_datagram> data;
        union {
            cmsghdr align;
            char bytes[CMSG_SPACE(sizeof(ucred)) + CMSG_SPACE(sizeof(int) * max_passed_fds)];
        } control;
        iovec iov{data.data(), data.size()};
        msghdr msg{};
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.bytes;
        msg.msg_controllen = sizeof control.bytes;

        ssize_t n;
        do n = ::recvmsg(socket.native_handle(), &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
        while (n < 0 && errno == EINTR);
        if (n < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                log_warning(std::string("notify socket: recvmsg: ") + std::strerror(errno));
            return false;
        }

        std::optional<ucred> cred;
        for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
            if (c->cmsg_level != SOL_SOCKET) continue;
            if (c->cmsg_type == SCM_RIGHTS) {
                // Nobody here wants them (BARRIER=1 waits for this close).
                std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                for (std::size_t k = 0; k < count; ++k) {
                    int fd;
                    std::memcpy(&fd, CMSG_DATA(c) + k * sizeof(int), sizeof fd);
                    ::close(fd);
                }
            } else if (c->cmsg_type == SCM_CREDENTIALS && c->cmsg_len >= CMSG_LEN(sizeof(ucred))) {
                ucred u;
                std::memcpy(&u, CMSG_DATA(c), sizeof u);
                cred = u;
            }
        }

        if (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
            log_debug(std::string("notify socket: dropped a truncated datagram") +
                      (cred ? " from pid " + std::to_string(cred->pid) : std::string()) +
                      ((msg.msg_flags & MSG_TRUNC) ? " (longer than " + std::to_string(max_datagram) + " bytes)"
                                                   : " (control data truncated)"));
            return true;
        }
        // pid 0: the sender lives in a pid namespace we cannot see.
        if (!cred || cred->pid <= 0) {
            log_debug("notify socket: dropped a datagram without sender credentials");
            return true;
        }
        std::string error;
        auto message = protocol::parse_notify(std::string_view(data.data(), static_cast<std::size_t>(n)), error);
        if (!message) {
            log_debug("notify socket: ignored a malformed datagram from pid " + std::to_string(cred->pid) + ": " +
                      error);
            return true;
        }
        got.emplace(cred->pid, std::move(*message));
        return true;
    }
};

NotifySocket::NotifySocket(boost::asio::io_context& io, std::string path, Handler handler)
    : path_(std::move(path)), state_(std::make_shared<State>(io, std::move(handler))) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path_.empty() || path_.size() >= sizeof addr.sun_path)
        throw_errno(ENAMETOOLONG, "notify socket: path is empty or longer than " +
                                      std::to_string(sizeof addr.sun_path - 1) + " bytes: " + path_);
    std::memcpy(addr.sun_path, path_.c_str(), path_.size() + 1);

    // Asio never sets FD_CLOEXEC, and workers must inherit none of our
    // descriptors: create the socket ourselves.
    spawn::unique_fd fd(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd) throw_errno(errno, "notify socket: cannot create a socket for " + path_);
    int one = 1;
    if (::setsockopt(fd.get(), SOL_SOCKET, SO_PASSCRED, &one, sizeof one) != 0)
        throw_errno(errno, "notify socket: cannot set SO_PASSCRED on " + path_);

    // A socket left by an earlier broker is stale; anything else at the path
    // is somebody's file and is not ours to remove.
    struct stat st {};
    if (::lstat(path_.c_str(), &st) == 0) {
        if (!S_ISSOCK(st.st_mode))
            throw_errno(EEXIST, "notify socket: cannot bind " + path_ + ": it exists and is not a socket");
        if (::unlink(path_.c_str()) != 0 && errno != ENOENT)
            throw_errno(errno, "notify socket: cannot remove the stale socket " + path_);
    }
    if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0)
        throw_errno(errno, "notify socket: cannot bind " + path_);
    // Workers may run as other users (run_as), so anyone may send: who can
    // reach the path is limited by the runtime directory's mode (0750), and
    // what a datagram may say is limited by its kernel-checked sender pid,
    // which must be a worker's own pid to be acted on.
    if (::chmod(path_.c_str(), 0666) != 0) {
        int err = errno;
        ::unlink(path_.c_str());
        throw_errno(err, "notify socket: cannot chmod " + path_);
    }

    boost::system::error_code ec;
    state_->socket.assign(boost::asio::local::datagram_protocol(), fd.get(), ec);
    if (ec) {
        ::unlink(path_.c_str());
        throw std::system_error(ec.value(), std::system_category(), "notify socket: cannot register " + path_);
    }
    fd.release();
    std::lock_guard lock(state_->mutex);
    state_->arm();
}

NotifySocket::~NotifySocket() { close(); }

void NotifySocket::close() {
    {
        std::lock_guard lock(state_->mutex);
        if (state_->closed.exchange(true)) return;
        boost::system::error_code ignored;
        state_->socket.close(ignored); // the pending wait ends with operation_aborted
    }
    ::unlink(path_.c_str());
}

} // namespace foreman::broker
