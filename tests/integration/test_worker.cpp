#include "test_worker.hpp"

#include <systemd/sd-daemon.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <poll.h>
#include <string>
#include <sys/socket.h>
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
    std::fprintf(stderr, "test worker: unknown mode %s\n", mode.c_str());
    return 2;
}

} // namespace foreman::test
