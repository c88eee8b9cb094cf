#include "broker/socket_activation.hpp"

#include <systemd/sd-daemon.h>

#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <stdexcept>
#include <sys/socket.h>
#include <sys/un.h>
#include <vector>

namespace foreman::broker {
namespace {

/// What `fd` is bound to, for an error message.
std::string bound_path(int fd) {
    sockaddr_un addr{};
    socklen_t len = sizeof addr;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) < 0 || addr.sun_family != AF_UNIX)
        return "(not a unix socket)";
    if (len <= offsetof(sockaddr_un, sun_path)) return "(unnamed)";
    if (addr.sun_path[0] == '\0') return "@" + std::string(addr.sun_path + 1, len - offsetof(sockaddr_un, sun_path) - 1);
    return std::string(addr.sun_path, ::strnlen(addr.sun_path, len - offsetof(sockaddr_un, sun_path)));
}

/// The names systemd gave, freed as sd_listen_fds_with_names(3) asks.
struct Names {
    char** names = nullptr;
    ~Names() {
        if (!names) return;
        for (char** n = names; *n; ++n) std::free(*n);
        std::free(names);
    }
};

} // namespace

spawn::unique_fd inherited_control_socket(const std::string& control_socket) {
    Names names;
    int n = ::sd_listen_fds_with_names(1, &names.names);
    if (n < 0) throw std::runtime_error(std::string("LISTEN_FDS: ") + std::strerror(-n));
    if (n == 0) return {};
    // Whatever follows, the passed descriptors are ours to close.
    std::vector<spawn::unique_fd> passed;
    for (int i = 0; i < n; ++i) passed.emplace_back(SD_LISTEN_FDS_START + i);
    if (n != 1)
        throw std::runtime_error("LISTEN_FDS=" + std::to_string(n) +
                                 ": expected one socket, the control socket (one ListenStream= in foreman.socket)");
    int fd = passed.front().get();
    if (::sd_is_socket_unix(fd, SOCK_STREAM, 1, nullptr, 0) <= 0)
        throw std::runtime_error("the socket passed by LISTEN_FDS is not a listening AF_UNIX SOCK_STREAM socket");
    if (::sd_is_socket_unix(fd, SOCK_STREAM, 1, control_socket.c_str(), 0) <= 0)
        throw std::runtime_error("the socket passed by LISTEN_FDS listens at " + bound_path(fd) +
                                 ", not at control_socket " + control_socket +
                                 " (ListenStream= and control_socket must name the same path)");
    // sd_listen_fds() sets FD_CLOEXEC itself; that no worker ever inherits
    // the control socket must not hang on a library detail.
    if (::fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
        throw std::runtime_error(std::string("fcntl on the socket passed by LISTEN_FDS: ") + std::strerror(errno));
    return std::move(passed.front());
}

} // namespace foreman::broker
