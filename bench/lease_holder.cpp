#include "bench/lease_holder.hpp"

#include "bench/broker_process.hpp"
#include "client/connection.hpp"

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sstream>
#include <stdexcept>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

extern char** environ;

namespace foreman::bench {

namespace {

/// Waits for `pid` up to `limit`; true when it was reaped.
bool reap_within(pid_t pid, std::chrono::milliseconds limit) {
    auto deadline = std::chrono::steady_clock::now() + limit;
    for (;;) {
        int status = 0;
        pid_t r = ::waitpid(pid, &status, WNOHANG);
        if (r == pid || (r < 0 && errno == ECHILD)) return true;
        if (std::chrono::steady_clock::now() >= deadline) return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
}

} // namespace

LeaseHolder::LeaseHolder(const std::string& socket, const std::string& protocol, std::chrono::milliseconds wait,
                         bool detach) {
    // Both pipes close-on-exec: only the dup2'd ends reach the helper, so it
    // holds no other descriptor of ours (a worker connection it kept open
    // would hide the end of a lease from that worker).
    int in[2], out[2];
    if (::pipe2(in, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
    if (::pipe2(out, O_CLOEXEC) != 0) {
        ::close(in[0]);
        ::close(in[1]);
        throw std::runtime_error("pipe2 failed");
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    std::string exe = bin_dir() + "/foreman-bench", wait_s = std::to_string(wait.count()), detach_s = detach ? "1" : "0";
    std::vector<char*> argv{exe.data(),       const_cast<char*>("tune"), const_cast<char*>("--hold-lease"),
                            const_cast<char*>(socket.c_str()), const_cast<char*>(protocol.c_str()),
                            wait_s.data(),    detach_s.data(),           nullptr};
    int rc = ::posix_spawn(&pid_, exe.c_str(), &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    ::close(in[0]);
    ::close(out[1]);
    to_child_ = in[1];
    if (rc != 0) {
        ::close(out[0]);
        ::close(to_child_);
        pid_ = -1;
        throw std::runtime_error("posix_spawn " + exe + " failed");
    }
    // One line: "<lease_id> <worker_pid> <ttl_ms>", or nothing when it failed.
    std::string line;
    char c;
    auto deadline = std::chrono::steady_clock::now() + wait + std::chrono::seconds(10);
    while (line.find('\n') == std::string::npos) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        pollfd p{out[0], POLLIN, 0};
        if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) == 0) break;
        ssize_t n = ::read(out[0], &c, 1);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        line += c;
    }
    ::close(out[0]);
    std::istringstream fields(line);
    if (!(fields >> lease_id_ >> worker_pid_)) {
        kill_now();
        finish();
        throw std::runtime_error("lease holder for " + protocol + " got no lease");
    }
}

LeaseHolder::~LeaseHolder() { finish(); }

void LeaseHolder::kill_now() {
    if (pid_ < 0) return;
    ::kill(pid_, SIGKILL);
}

void LeaseHolder::finish() {
    if (pid_ < 0) return;
    if (to_child_ >= 0) ::close(to_child_);
    to_child_ = -1;
    if (!reap_within(pid_, std::chrono::seconds(5))) {
        ::kill(pid_, SIGKILL);
        reap_within(pid_, std::chrono::seconds(5));
    }
    pid_ = -1;
}

int hold_lease_main(const std::vector<std::string>& args) {
    if (args.size() != 4) {
        std::fprintf(stderr, "usage: foreman-bench tune --hold-lease SOCKET PROTOCOL WAIT_MS DETACH\n");
        return 2;
    }
    auto conn = client::Connection::connect(args[0]);
    client::LeaseOptions o;
    o.wait_ms = std::stoull(args[2]);
    o.detach = args[3] == "1";
    auto lease = conn.lease(args[1], o);
    std::printf("%llu %d %lld\n", static_cast<unsigned long long>(lease.id()), static_cast<int>(lease.worker_pid()),
                static_cast<long long>(lease.ttl().count()));
    std::fflush(stdout);
    // Renew at ttl/3 until stdin closes; stop renewing once the lease is gone.
    bool live = true;
    const auto every = std::max<std::chrono::milliseconds>(lease.ttl() / 3, std::chrono::milliseconds(1));
    for (;;) {
        pollfd p{0, POLLIN, 0};
        int r = ::poll(&p, 1, static_cast<int>(every.count()));
        if (r < 0 && errno == EINTR) continue;
        if (r > 0) {
            char buf[64];
            if (::read(0, buf, sizeof buf) <= 0) break;
            continue;
        }
        if (!live) continue;
        try {
            lease.renew();
        } catch (const client::Error&) {
            live = false; // it ended (EXPIRED worker-exit, ttl): nothing left to renew
        }
    }
    lease.take_fd().reset();
    try {
        if (live) lease.release();
    } catch (const client::Error&) {
    }
    lease.forget();
    return 0;
}

} // namespace foreman::bench
