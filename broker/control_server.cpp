#include "broker/control_server.hpp"

#include "broker/control_session.hpp"
#include "broker/log.hpp"
#include "broker/unix_socket.hpp"

#include <boost/asio/post.hpp>

#include <cstring>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

namespace foreman::broker {

namespace asio = boost::asio;
using namespace std::chrono_literals;

namespace {
/// Descriptors held back while accepting, for the broker's own work when
/// accept runs out: a grant's connect, a spawn's sockets, pipes and pidfd.
constexpr std::size_t accept_reserve_fds = 16;
/// How long accepting pauses when descriptors have run out.
constexpr std::chrono::milliseconds accept_pause = 100ms;

bool out_of_descriptors(int error) {
    return error == EMFILE || error == ENFILE || error == ENOBUFS || error == ENOMEM;
}
} // namespace

namespace {
/// How long accepting pauses when the broker is out of descriptors.
constexpr std::chrono::milliseconds out_of_descriptors_pause{100};
} // namespace

bool socket_is_live(const std::string& path) {
    std::error_code ec;
    spawn::unique_fd fd = connect_unix(path, ec);
    return static_cast<bool>(fd) || ec == std::errc::resource_unavailable_try_again;
}

ControlServer::ControlServer(Broker& broker, asio::io_context& io, PickContext pick, const GlobalConfig& global,
                             spawn::unique_fd inherited)
    : broker_(broker), pick_(std::move(pick)), path_(global.control_socket), owns_path_(!inherited),
      max_clients_(global.max_clients), listener_(io), pause_timer_(io) {
    if (inherited) {
        // Its file, mode and owner are the service manager's (SocketMode=).
        log_info("serving the control socket " + path_ + " passed by the service manager");
        listener_.assign(inherited.release());
        listener_.non_blocking(true);
        return;
    }
    struct stat st {};
    if (::lstat(path_.c_str(), &st) == 0) {
        if (!S_ISSOCK(st.st_mode))
            throw std::runtime_error("control_socket " + path_ + " exists and is not a socket");
        if (socket_is_live(path_))
            throw std::runtime_error("another broker answers on " + path_ + "; not taking it over");
        log_info("replacing the stale control socket " + path_);
    }
    make_directories(path_.substr(0, path_.rfind('/')), 0750);
    spawn::unique_fd fd = listen_unix_with_mode(path_, SOMAXCONN, global.control_socket_mode);
    listener_.assign(fd.release());
    listener_.non_blocking(true);
}

ControlServer::~ControlServer() { close(); }

void ControlServer::start() {
    fill_reserve();
    accept();
}

void ControlServer::accept() {
    listener_.async_wait(asio::posix::stream_descriptor::wait_read, [this](const boost::system::error_code& ec) {
        if (ec) return; // closed
        if (on_readable()) accept();
    });
}

bool ControlServer::fill_reserve() {
    while (reserve_.size() < accept_reserve_fds) {
        spawn::unique_fd fd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
        if (!fd) {
            reserve_.clear();
            return false;
        }
        reserve_.push_back(std::move(fd));
    }
    return true;
}

void ControlServer::pause(int error) {
    if (!paused_)
        log_warning(std::string("accept on the control socket: ") + std::strerror(error) +
                    ": the connections open are served; new ones wait, tried again every " +
                    std::to_string(accept_pause.count()) + " ms");
    paused_ = true;
    reserve_.clear();
    pause_timer_.expires_after(accept_pause);
    pause_timer_.async_wait([this](const boost::system::error_code& ec) {
        if (ec) return; // closed
        {
            std::lock_guard lock(mu_);
            if (closed_) return;
        }
        if (!fill_reserve()) {
            pause(EMFILE);
            return;
        }
        // Edge-triggered: what waits in the backlog now raises no new event.
        if (on_readable()) accept();
    });
}

bool ControlServer::on_readable() {
    for (;;) {
        // accept4: Asio's accept sets no FD_CLOEXEC.
        int fd = ::accept4(listener_.native_handle(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return true;
            if (out_of_descriptors(errno)) {
                pause(errno);
                return false;
            }
            log_warning(std::string("accept on the control socket: ") + std::strerror(errno));
            return true;
        }
        if (paused_) {
            paused_ = false;
            log_info("accepting connections on the control socket again");
        }
        spawn::unique_fd conn(fd);
        PeerCredentials peer;
        ucred cred{};
        socklen_t len = sizeof cred;
        if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) peer = {cred.pid, cred.uid, cred.gid};
        std::shared_ptr<ControlSession> session;
        try {
            session = std::make_shared<ControlSession>(broker_, *this, pick_(), std::move(conn), peer);
        } catch (const std::exception& e) {
            // Out of descriptors or memory (Asio throws): this connection is
            // closed unanswered; thrown on, it would end the broker.
            log_warning(std::string("cannot serve a connection on the control socket: ") + e.what());
            continue;
        }
        bool refuse;
        {
            std::lock_guard lock(mu_);
            if (closed_) return false;
            refuse = sessions_.size() >= max_clients_;
            sessions_.emplace(session.get(), session);
        }
        if (refuse) {
            log_warning("max_clients (" + std::to_string(max_clients_) + ") reached: refusing a connection of uid " +
                        std::to_string(peer.uid));
            session->refuse("max_clients (" + std::to_string(max_clients_) + ") reached");
        } else {
            session->start();
        }
    }
}

void ControlServer::session_ended(ControlSession* session) {
    std::shared_ptr<ControlSession> keep; // destroyed outside the lock
    std::lock_guard lock(mu_);
    auto it = sessions_.find(session);
    if (it == sessions_.end()) return;
    keep = std::move(it->second);
    sessions_.erase(it);
}

std::size_t ControlServer::connections() {
    std::lock_guard lock(mu_);
    return sessions_.size();
}

void ControlServer::close() {
    std::unordered_map<ControlSession*, std::shared_ptr<ControlSession>> sessions;
    {
        std::lock_guard lock(mu_);
        if (closed_) return;
        closed_ = true;
        sessions.swap(sessions_);
    }
    boost::system::error_code ignored;
    pause_timer_.cancel();
    listener_.close(ignored);
    if (owns_path_) ::unlink(path_.c_str());
    for (auto& [p, s] : sessions) s->close();
}

} // namespace foreman::broker
