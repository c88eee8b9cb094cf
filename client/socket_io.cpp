#include "client/socket_io.hpp"

#include "client/error.hpp"
#include "protocol/scm_rights.hpp"

#include <cerrno>
#include <cstring>
#include <sys/socket.h>
#include <sys/un.h>

namespace foreman::client {

namespace {

std::string errno_text(const std::string& what, int err) { return what + ": " + std::strerror(err); }

} // namespace

spawn::unique_fd open_unix_stream(bool non_blocking) {
    int flags = SOCK_STREAM | SOCK_CLOEXEC | (non_blocking ? SOCK_NONBLOCK : 0);
    spawn::unique_fd fd(::socket(AF_UNIX, flags, 0));
    if (!fd) throw Error(Error::Kind::io, errno_text("socket", errno));
    return fd;
}

spawn::unique_fd connect_unix(const std::string& path) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.empty() || path.size() >= sizeof(addr.sun_path))
        throw Error(Error::Kind::io, "bad control socket path '" + path + "' (empty or too long)");
    std::memcpy(addr.sun_path, path.data(), path.size());
    auto fd = open_unix_stream(false);
    int rc;
    do {
        rc = ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
    } while (rc < 0 && errno == EINTR);
    if (rc < 0) throw Error(Error::Kind::io, errno_text("cannot connect to " + path, errno));
    return fd;
}

ssize_t recv_with_fds(int fd, char* buf, std::size_t len, std::vector<spawn::unique_fd>& fds) {
    std::vector<int> received; // protocol::recv_with_fds: the one recvmsg with SCM_RIGHTS
    ssize_t n = protocol::recv_with_fds(fd, buf, len, received);
    for (int r : received) fds.emplace_back(r);
    if (n < 0 && errno == EMSGSIZE)
        throw Error(Error::Kind::protocol, "descriptors from the broker were truncated (MSG_CTRUNC)");
    return n;
}

void send_all(int fd, std::string_view bytes) {
    while (!bytes.empty()) {
        ssize_t n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            throw Error(Error::Kind::io, errno_text("send to broker", errno));
        }
        bytes.remove_prefix(static_cast<std::size_t>(n));
    }
}

} // namespace foreman::client
