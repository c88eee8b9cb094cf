#include "broker/notify_socket.hpp"

#include "broker/log.hpp"
#include "spawn/unique_fd.hpp"

#include <array>
#include <chrono>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <algorithm>
#include <poll.h>
#include <sys/eventfd.h>
#include <optional>
#include <system_error>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

namespace foreman::broker {
namespace {

/// Room for SCM_RIGHTS descriptors: libsystemd's BARRIER=1 sends one; a
/// sender passing more gets them dropped by the kernel (MSG_CTRUNC), which
/// closes the ones that did not fit.
constexpr std::size_t max_passed_fds = 16;

/// Wake-ups closer together than this mean a stream of datagrams...
constexpr std::chrono::microseconds busy_gap{1000};
/// ...and then the next read waits this long, to take several at once. The
/// kernel queues 10 datagrams per socket by default (net.unix.max_dgram_qlen)
/// before senders block, so this stays well below 10 datagrams' worth at
/// 10,000 a second.
constexpr std::chrono::microseconds coalesce{800};

[[noreturn]] void throw_errno(int err, const std::string& what) {
    throw std::system_error(err, std::system_category(), what);
}

} // namespace

NotifySocket::NotifySocket(std::string path, Handler handler)
    : path_(std::move(path)), handler_(std::move(handler)) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path_.empty() || path_.size() >= sizeof addr.sun_path)
        throw_errno(ENAMETOOLONG, "notify socket: path is empty or longer than " +
                                      std::to_string(sizeof addr.sun_path - 1) + " bytes: " + path_);
    std::memcpy(addr.sun_path, path_.c_str(), path_.size() + 1);

    // Workers must inherit none of our descriptors: everything CLOEXEC.
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

    socket_ = std::move(fd);
    stop_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!stop_) {
        int err = errno;
        ::unlink(path_.c_str());
        throw_errno(err, "notify socket: eventfd");
    }
    thread_ = std::thread([this] { run(); });
}

NotifySocket::~NotifySocket() { close(); }

void NotifySocket::close() {
    if (closed_) return;
    closed_ = true;
    std::uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(stop_.get(), &one, sizeof one);
    if (thread_.joinable()) thread_.join();
    socket_.reset();
    ::unlink(path_.c_str());
}

void NotifySocket::run() {
    std::vector<Datagram> got;
    got.reserve(batch);
    auto last_wake = std::chrono::steady_clock::time_point{};
    for (;;) {
        pollfd fds[2] = {{socket_.get(), POLLIN, 0}, {stop_.get(), POLLIN, 0}};
        if (::poll(fds, 2, -1) < 0) {
            if (errno == EINTR) continue;
            log_error(std::string("notify socket: poll: ") + std::strerror(errno));
            return;
        }
        if (fds[1].revents != 0) return;
        got.clear();
        receive(got);
        if (!got.empty()) handler_(got);
        // Under a stream of heartbeats (wake-ups closer than busy_gap, and
        // nothing but WATCHDOG=1), wait a little before the next read so that
        // it takes several at once: a wake-up costs more than handling a
        // datagram (bench/RESULTS.md). Anything else is read at once: a
        // worker's STATUS= at the start of a lease is followed by the READY=1
        // that ends it, and that READY=1 waiting out the pause held one
        // client's notify=foreman cycle at ~1 ms (found by foreman-bench soak).
        auto now = std::chrono::steady_clock::now();
        bool busy = now - last_wake < busy_gap && !got.empty() &&
                    std::all_of(got.begin(), got.end(), [](const Datagram& d) {
                        const auto& m = d.message;
                        return m.watchdog && !m.ready && !m.stopping && !m.status;
                    });
        last_wake = now;
        if (busy) {
            timespec ts{0, static_cast<long>(std::chrono::nanoseconds(coalesce).count())};
            pollfd stop{stop_.get(), POLLIN, 0};
            if (::ppoll(&stop, 1, &ts, nullptr) > 0) return;
        }
    }
}

/// Reads what is queued, up to `batch` datagrams, without blocking.
void NotifySocket::receive(std::vector<Datagram>& out) {
    struct Slot {
        std::array<char, max_datagram> data;
        alignas(cmsghdr) char control[CMSG_SPACE(sizeof(ucred)) + CMSG_SPACE(sizeof(int) * max_passed_fds)];
        iovec iov;
    };
    // Per thread, allocated once: 32 x 4 KiB.
    static thread_local std::vector<Slot> slots(batch);
    std::array<mmsghdr, batch> msgs{};
    for (std::size_t i = 0; i < batch; ++i) {
        slots[i].iov = {slots[i].data.data(), slots[i].data.size()};
        msghdr& m = msgs[i].msg_hdr;
        m.msg_iov = &slots[i].iov;
        m.msg_iovlen = 1;
        m.msg_control = slots[i].control;
        m.msg_controllen = sizeof slots[i].control;
    }
    int n;
    do n = ::recvmmsg(socket_.get(), msgs.data(), batch, MSG_CMSG_CLOEXEC | MSG_DONTWAIT, nullptr);
    while (n < 0 && errno == EINTR);
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            log_warning(std::string("notify socket: recvmmsg: ") + std::strerror(errno));
        return;
    }
    for (int i = 0; i < n; ++i) {
        msghdr& msg = msgs[static_cast<std::size_t>(i)].msg_hdr;
        std::size_t len = msgs[static_cast<std::size_t>(i)].msg_len;
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
            if (log_level() <= LogLevel::debug)
                log_debug(std::string("notify socket: dropped a truncated datagram") +
                          (cred ? " from pid " + std::to_string(cred->pid) : std::string()) +
                          ((msg.msg_flags & MSG_TRUNC) ? " (longer than " + std::to_string(max_datagram) + " bytes)"
                                                       : " (control data truncated)"));
            continue;
        }
        // pid 0: the sender lives in a pid namespace we cannot see.
        if (!cred || cred->pid <= 0) {
            log_debug("notify socket: dropped a datagram without sender credentials");
            continue;
        }
        std::string error;
        auto message = protocol::parse_notify(std::string_view(slots[static_cast<std::size_t>(i)].data.data(), len), error);
        if (!message) {
            if (log_level() <= LogLevel::debug)
                log_debug("notify socket: ignored a malformed datagram from pid " + std::to_string(cred->pid) + ": " +
                          error);
            continue;
        }
        out.push_back(Datagram{cred->pid, std::move(*message)});
    }
}

} // namespace foreman::broker
