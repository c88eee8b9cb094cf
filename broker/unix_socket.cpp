#include "broker/unix_socket.hpp"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

namespace foreman::broker {
namespace {

bool make_address(const std::string& path, sockaddr_un& addr) {
    std::memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    if (path.empty() || path.size() >= sizeof addr.sun_path) return false;
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    return true;
}

std::system_error error_at(int err, const std::string& what, const std::string& path) {
    return std::system_error(err, std::system_category(), what + " " + path);
}

} // namespace

spawn::unique_fd listen_unix(const std::string& path, int backlog) {
    sockaddr_un addr;
    if (!make_address(path, addr)) throw error_at(ENAMETOOLONG, "socket path too long:", path);
    spawn::unique_fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) throw error_at(errno, "socket for", path);
    ::unlink(path.c_str()); // a stale socket from an earlier worker or broker
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0)
        throw error_at(errno, "bind", path);
    if (::listen(fd.get(), backlog) < 0) throw error_at(errno, "listen", path);
    return fd;
}

spawn::unique_fd connect_unix(const std::string& path, std::error_code& error) {
    sockaddr_un addr;
    if (!make_address(path, addr)) {
        error = std::error_code(ENAMETOOLONG, std::system_category());
        return {};
    }
    spawn::unique_fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd) {
        error = std::error_code(errno, std::system_category());
        return {};
    }
    // Non-blocking, a unix connect completes at once (there is no
    // EINPROGRESS for AF_UNIX) or fails at once (EAGAIN: backlog full).
    while (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0) {
        if (errno == EINTR) continue;
        error = std::error_code(errno, std::system_category());
        return {};
    }
    // The descriptor is handed to clients, who expect a blocking socket.
    if (::fcntl(fd.get(), F_SETFL, ::fcntl(fd.get(), F_GETFL) & ~O_NONBLOCK) < 0) {
        error = std::error_code(errno, std::system_category());
        return {};
    }
    error.clear();
    return fd;
}

void make_directories(const std::string& path, unsigned mode) {
    for (std::size_t pos = 1; pos <= path.size(); ++pos) {
        if (pos != path.size() && path[pos] != '/') continue;
        std::string prefix = path.substr(0, pos);
        if (::mkdir(prefix.c_str(), mode) < 0 && errno != EEXIST) throw error_at(errno, "mkdir", prefix);
    }
    struct stat st {};
    if (::stat(path.c_str(), &st) < 0) throw error_at(errno, "stat", path);
    if (!S_ISDIR(st.st_mode)) throw error_at(ENOTDIR, "not a directory:", path);
}

} // namespace foreman::broker
