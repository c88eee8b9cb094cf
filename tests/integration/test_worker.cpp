#include "test_worker.hpp"

#include <systemd/sd-daemon.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <poll.h>
#include <string>
#include <grp.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

extern char** environ;

namespace foreman::test {
namespace {

int listener() {
    if (sd_listen_fds(0) != 1) {
        std::fprintf(stderr, "test worker: expected one activation socket\n");
        std::exit(2);
    }
    return SD_LISTEN_FDS_START;
}

/// Serves one connection: echoes until EOF. With `heartbeat_us`, sends
/// WATCHDOG=1 that often while the connection is open.
void serve(int conn, long heartbeat_us) {
    char buf[4096];
    for (;;) {
        pollfd p{conn, POLLIN, 0};
        int timeout = heartbeat_us > 0 ? static_cast<int>(heartbeat_us / 1000) : -1;
        int r = ::poll(&p, 1, timeout);
        if (r == 0) {
            sd_notify(0, "WATCHDOG=1");
            continue;
        }
        if (r < 0 && errno == EINTR) continue;
        ssize_t n = ::read(conn, buf, sizeof buf);
        if (n <= 0) break;
        if (::write(conn, buf, static_cast<size_t>(n)) != n) break;
        if (heartbeat_us > 0) sd_notify(0, "WATCHDOG=1");
    }
    ::close(conn);
}

int echo_loop(long heartbeat_us) {
    int l = listener();
    sd_notify(0, "READY=1");
    for (;;) {
        int conn = ::accept4(l, nullptr, nullptr, SOCK_CLOEXEC);
        if (conn < 0) {
            if (errno == EINTR) continue;
            return 1;
        }
        serve(conn, heartbeat_us);
        sd_notify(0, "READY=1");
    }
}

/// pid, sid, argv and environment into `path`, which appears whole (rename).
bool dump(int argc, char** argv, const std::string& path) {
    std::string tmp = path + ".tmp";
    FILE* f = std::fopen(tmp.c_str(), "w");
    if (!f) return false;
    std::fprintf(f, "pid=%d\nsid=%d\n", static_cast<int>(::getpid()), static_cast<int>(::getsid(0)));
    for (int i = 0; i < argc; ++i) std::fprintf(f, "argv%d=%s\n", i, argv[i]);
    for (char** e = environ; *e; ++e) std::fprintf(f, "env %s\n", *e);
    std::fclose(f);
    return std::rename(tmp.c_str(), path.c_str()) == 0;
}

/// Mode `pid`: every read is answered "pid <pid>\n".
int pid_loop() {
    int l = listener();
    sd_notify(0, "READY=1");
    std::string answer = "pid " + std::to_string(::getpid()) + "\n";
    for (;;) {
        int conn = ::accept4(l, nullptr, nullptr, SOCK_CLOEXEC);
        if (conn < 0) {
            if (errno == EINTR) continue;
            return 1;
        }
        char buf[4096];
        for (;;) {
            ssize_t n = ::read(conn, buf, sizeof buf);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) break;
            if (::write(conn, answer.data(), answer.size()) != static_cast<ssize_t>(answer.size())) break;
        }
        ::close(conn);
        sd_notify(0, "READY=1");
    }
}

/// Mode `raw-client UID SOCKET LINE...`: a control client of another uid.
/// With `hold`, it keeps its connection (and its leases) until killed.
int raw_client(int argc, char** argv, bool hold) {
    if (argc < 5) return 2;
    if (std::strcmp(argv[3], "-") != 0) {
        auto uid = static_cast<uid_t>(std::atol(argv[3]));
        if (::setgroups(0, nullptr) != 0 || ::setgid(uid) != 0 || ::setuid(uid) != 0) {
            std::fprintf(stderr, "raw-client: cannot become uid %u: %s\n", uid, std::strerror(errno));
            return 2;
        }
    }
    int s = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, argv[4], sizeof addr.sun_path - 1);
    if (::connect(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
        std::printf("connect: %s\n", std::strerror(errno));
        return 4;
    }
    std::string out = "VERSION\tforeman\t1000\n";
    for (int i = 5; i < argc; ++i) out += std::string(argv[i]) + "\n";
    if (::send(s, out.data(), out.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(out.size())) return 4;
    int want = argc - 5, got = 0;
    std::string in;
    char buf[4096];
    while (got < want) {
        pollfd p{s, POLLIN, 0};
        if (::poll(&p, 1, 5000) <= 0) break;
        ssize_t n = ::read(s, buf, sizeof buf);
        if (n <= 0) break;
        in.append(buf, static_cast<std::size_t>(n));
        for (auto nl = in.find('\n'); nl != std::string::npos; nl = in.find('\n')) {
            std::string line = in.substr(0, nl);
            in.erase(0, nl + 1);
            if (line.rfind("OK\t", 0) == 0 || line.rfind("FAIL\t", 0) == 0) {
                std::printf("%s\n", line.c_str());
                ++got;
            }
        }
    }
    if (hold)
        for (;;) ::pause(); // until the test's SIGKILL
    return 0;
}

long watchdog_interval() {
    const char* w = std::getenv("WATCHDOG_USEC");
    return w ? std::atol(w) / 4 : 0;
}

} // namespace

int run_test_worker(int argc, char** argv) {
    if (argc < 3 || std::strcmp(argv[1], "worker") != 0) return -1;
    std::string mode = argv[2];
    std::setvbuf(stdout, nullptr, _IOLBF, 0);
    if (mode == "echo") return echo_loop(0);
    if (mode == "heartbeat") return echo_loop(watchdog_interval());
    if (mode == "pid") return pid_loop();
    if (mode == "raw-client") return raw_client(argc, argv, false);
    if (mode == "hold-client") return raw_client(argc, argv, true);
    if (mode == "crash-at-start") return 3;
    if (mode == "dump" || mode == "dump-ignore-term") {
        // argv, environment and identity into FILE (argv[3]), then echo.
        if (argc < 4) return 2;
        // Ignored before the file appears: a test that sees the file knows
        // SIGTERM will not stop this worker.
        if (mode == "dump-ignore-term") std::signal(SIGTERM, SIG_IGN);
        if (!dump(argc, argv, argv[3])) return 2;
        return echo_loop(0);
    }
    if (mode == "never-ready") {
        listener();
        for (;;) ::pause();
    }
    if (mode == "ignore-term") {
        std::signal(SIGTERM, SIG_IGN);
        return echo_loop(0);
    }
    if (mode == "no-heartbeat") {
        int l = listener();
        sd_notify(0, "READY=1");
        int conn = ::accept4(l, nullptr, nullptr, SOCK_CLOEXEC);
        (void)conn;
        for (;;) ::pause(); // hung: no WATCHDOG=1, no READY=1
    }
    if (mode == "close-listener") {
        // Closed before READY=1: no connection of the broker's can slip in.
        ::close(listener());
        sd_notify(0, "READY=1");
        for (;;) ::pause();
    }
    if (mode == "never-accept") {
        listener();
        sd_notify(0, "READY=1");
        for (;;) ::pause(); // connections pile up in the backlog, unanswered
    }
    if (mode == "exit-mid-lease") {
        int l = listener();
        sd_notify(0, "READY=1");
        int conn = ::accept4(l, nullptr, nullptr, SOCK_CLOEXEC);
        (void)conn;
        return 0;
    }
    if (mode == "grandchild") {
        pid_t child = ::fork();
        if (child == 0) {
            std::signal(SIGTERM, SIG_IGN);
            for (;;) ::pause();
        }
        std::printf("grandchild %d\n", static_cast<int>(child));
        return echo_loop(0);
    }
    if (mode == "bad-status") {
        // A STATUS= that is not UTF-8 text: it must not reach STATUS json raw.
        sd_notify(0, "STATUS=caf\xc3\xa9 \xff\x01ok");
        return echo_loop(0);
    }
    std::fprintf(stderr, "test worker: unknown mode %s\n", mode.c_str());
    return 2;
}

} // namespace foreman::test
