#include "raw_control.hpp"

#include "protocol/scm_rights.hpp"

#include <catch2/catch.hpp>

#include <cstring>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

namespace foreman::test {

using Clock = std::chrono::steady_clock;

RawControl::RawControl(const std::string& path) {
    fd_ = spawn::unique_fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    REQUIRE(fd_.get() >= 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    REQUIRE(::connect(fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
}

bool RawControl::send(const std::string& bytes, const std::vector<int>& fds) {
    std::size_t done = 0;
    bool attach = !fds.empty();
    while (done < bytes.size() || attach) {
        iovec iov{const_cast<char*>(bytes.data() + done), bytes.size() - done};
        msghdr msg{};
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        std::vector<char> control;
        if (attach) {
            control.resize(CMSG_SPACE(sizeof(int) * fds.size()));
            msg.msg_control = control.data();
            msg.msg_controllen = control.size();
            cmsghdr* c = CMSG_FIRSTHDR(&msg);
            c->cmsg_level = SOL_SOCKET;
            c->cmsg_type = SCM_RIGHTS;
            c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
            std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
        }
        ssize_t n = ::sendmsg(fd_.get(), &msg, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return false;
        attach = false;
        done += static_cast<std::size_t>(n);
    }
    return true;
}

bool RawControl::handshake() { return send(version_line + "\n") && line() == version_line; }

std::optional<std::string> RawControl::line(std::chrono::milliseconds timeout) {
    auto deadline = Clock::now() + timeout;
    for (;;) {
        auto nl = in_.find('\n');
        if (nl != std::string::npos) {
            std::string l = in_.substr(0, nl);
            in_.erase(0, nl + 1);
            return l;
        }
        if (!fill(deadline)) return std::nullopt;
    }
}

bool RawControl::closed_by_broker(std::chrono::milliseconds timeout) {
    auto deadline = Clock::now() + timeout;
    while (fill(deadline)) {}
    return eof_ && in_.empty();
}

std::vector<spawn::unique_fd> RawControl::take_fds() { return std::move(fds_); }

bool RawControl::fill(Clock::time_point deadline) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    pollfd p{fd_.get(), POLLIN, 0};
    if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) != 1) return false;
    char buf[4096];
    std::vector<int> fds;
    ssize_t n = protocol::recv_with_fds(fd_.get(), buf, sizeof buf, fds);
    for (int f : fds) fds_.emplace_back(f);
    if (n <= 0) {
        eof_ = true; // end of file, or a reset after the broker's close
        return false;
    }
    in_.append(buf, static_cast<std::size_t>(n));
    return true;
}

OpenDir::OpenDir() { REQUIRE(::chmod(dir.path().c_str(), 0755) == 0); }

std::vector<std::string> run_raw_client(uid_t uid, const std::string& socket, const std::vector<std::string>& lines) {
    std::vector<std::string> argv{self_exe(), "worker", "raw-client", std::to_string(uid), socket};
    argv.insert(argv.end(), lines.begin(), lines.end());
    auto r = run_process(argv);
    INFO("raw-client stdout: " << r.out << "stderr: " << r.err);
    REQUIRE(r.status == 0);
    std::vector<std::string> out;
    std::size_t start = 0;
    for (auto nl = r.out.find('\n'); nl != std::string::npos; start = nl + 1, nl = r.out.find('\n', start))
        out.push_back(r.out.substr(start, nl - start));
    return out;
}

spawn::unique_fd connect_as(uid_t uid, const std::string& path) {
    int pair[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) == 0);
    spawn::unique_fd back(pair[0]);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    pid_t child = ::fork(); // the test has threads: the child makes only system calls
    REQUIRE(child >= 0);
    if (child == 0) {
        if (::setgroups(0, nullptr) != 0 || ::setgid(uid) != 0 || ::setuid(uid) != 0) ::_exit(2);
        int s = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (::connect(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) ::_exit(3);
        ::_exit(protocol::send_with_fd(pair[1], "s", s) == 1 ? 0 : 4);
    }
    ::close(pair[1]);
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    INFO("the child connecting as uid " << uid << " exited " << WEXITSTATUS(status));
    REQUIRE((WIFEXITED(status) && WEXITSTATUS(status) == 0));
    char c;
    std::vector<int> fds;
    REQUIRE(protocol::recv_with_fds(back.get(), &c, 1, fds) == 1);
    REQUIRE(fds.size() == 1);
    return spawn::unique_fd(fds[0]);
}

std::vector<std::string> socket_targets(int pid) {
    std::vector<std::string> out;
    for (auto& [fd, target] : open_fds(pid))
        if (target.rfind("socket:", 0) == 0) out.push_back(target);
    return out;
}

PassedPipe::PassedPipe() {
    int p[2];
    REQUIRE(::pipe2(p, O_CLOEXEC | O_NONBLOCK) == 0);
    read_end.reset(p[0]);
    write_end.reset(p[1]);
}

bool PassedPipe::all_copies_closed(std::chrono::milliseconds timeout) {
    write_end.reset();
    pollfd p{read_end.get(), POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) != 1) return false;
    char c;
    return ::read(read_end.get(), &c, 1) == 0;
}

} // namespace foreman::test
