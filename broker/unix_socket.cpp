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

spawn::unique_fd listen_unix_with_mode(const std::string& path, int backlog, unsigned mode) {
    // bind() creates the file with 0777 & ~umask, so bind-then-chmod leaves
    // a moment in which anyone the umask lets in may connect. umask() would
    // close it but is process-wide: a file another thread creates, or a
    // worker forked, meanwhile would get it too. So the socket is bound in
    // a fresh directory only our uid can enter (mkdtemp makes it 0700, in
    // the same folder, so on the same file system), given its mode, made to
    // listen, and then renamed to `path`: rename() is atomic and keeps the
    // inode (the socket stays bound and listening), and it replaces a stale
    // socket at `path` with no moment in which there is none.
    auto slash = path.rfind('/');
    std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
    std::string tmp_dir = dir + (dir.back() == '/' ? "" : "/") + ".foremanXXXXXX";
    std::string tmp_path = tmp_dir + "/s";
    sockaddr_un addr;
    if (!make_address(path, addr)) throw error_at(ENAMETOOLONG, "socket path too long:", path);
    if (!make_address(tmp_path, addr))
        throw error_at(ENAMETOOLONG, "socket path too long to be bound safely (a name of its folder, " + tmp_path +
                                         ", must fit too):", path);
    if (!::mkdtemp(tmp_dir.data())) throw error_at(errno, "mkdtemp next to", path);
    tmp_path = tmp_dir + "/s";
    make_address(tmp_path, addr);
    struct Cleanup {
        const std::string& dir;
        const std::string& socket;
        ~Cleanup() {
            ::unlink(socket.c_str()); // gone already once renamed
            ::rmdir(dir.c_str());
        }
    } cleanup{tmp_dir, tmp_path};
    spawn::unique_fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) throw error_at(errno, "socket for", path);
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0) throw error_at(errno, "bind", tmp_path);
    if (::chmod(tmp_path.c_str(), mode) < 0) throw error_at(errno, "chmod", tmp_path);
    if (::listen(fd.get(), backlog) < 0) throw error_at(errno, "listen", path);
    if (::rename(tmp_path.c_str(), path.c_str()) < 0) throw error_at(errno, "rename " + tmp_path + " to", path);
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
