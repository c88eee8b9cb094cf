#include "bench/spawn_server.hpp"

#include "broker/unix_socket.hpp"

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <fcntl.h>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace foreman::bench {

const char* to_string(SpawnServerKind kind) {
    return kind == SpawnServerKind::s6_ipcserver ? "s6-ipcserver" : "systemd-socket-activate";
}

SpawnServer::SpawnServer(SpawnServerKind kind, std::string socket, const std::string& program,
                         const std::string& log, int max_connections)
    : socket_(std::move(socket)) {
    std::vector<std::string> argv;
    if (kind == SpawnServerKind::s6_ipcserver) {
        // -c: connections at once (default 40); -C: from one uid (default
        // 40). Both would queue clients beyond 40 in the backlog.
        std::string c = std::to_string(max_connections);
        argv = {"s6-ipcserver", "-c", c, "-C", c, socket_, program, "--stdio"};
    } else {
        argv = {"systemd-socket-activate", "--accept", "-l", socket_, program};
    }
    ::unlink(socket_.c_str());
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
        int err = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        int null = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
        ::dup2(null, 0);
        ::dup2(err, 1);
        ::dup2(err, 2);
        ::unsetenv("NOTIFY_SOCKET");
        ::unsetenv("LISTEN_FDS");
        ::unsetenv("LISTEN_PID");
        ::unsetenv("LISTEN_FDNAMES");
        // systemd-socket-activate logs four lines per connection at its
        // default level (info); s6-ipcserver logs only warnings by default.
        ::setenv("SYSTEMD_LOG_LEVEL", "warning", 1);
        std::vector<char*> args;
        for (auto& a : argv) args.push_back(a.data());
        args.push_back(nullptr);
        ::execvp(args[0], args.data());
        ::_exit(127);
    }
    // Ready when a connection is echoed (the probe costs one spawn).
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < deadline) {
        std::error_code ec;
        if (auto fd = broker::connect_unix(socket_, ec)) {
            char c = '?';
            if (::write(fd.get(), &c, 1) == 1 && ::read(fd.get(), &c, 1) == 1) return;
        }
        int status = 0;
        if (::waitpid(pid_, &status, WNOHANG) == pid_) {
            pid_ = -1;
            std::ifstream in(log);
            std::stringstream ss;
            ss << in.rdbuf();
            throw std::runtime_error(std::string(argv[0]) + " exited at start: " + ss.str());
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    stop();
    throw std::runtime_error(argv[0] + " did not echo on " + socket_ + " within 10 s");
}

SpawnServer::~SpawnServer() { stop(); }

void SpawnServer::stop() {
    if (pid_ < 0) return;
    ::kill(pid_, SIGTERM);
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;
    ::unlink(socket_.c_str());
}

std::chrono::nanoseconds SpawnServer::cpu_time() const { return process_cpu_time(pid_, false); }
std::chrono::nanoseconds SpawnServer::children_cpu_time() const { return process_cpu_time(pid_, true); }

std::chrono::nanoseconds process_cpu_time(pid_t pid, bool children) {
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    if (!std::getline(stat, line)) return std::chrono::nanoseconds(0);
    std::istringstream rest(line.substr(line.rfind(')') + 2));
    std::string field;
    unsigned long long ticks = 0;
    const int first = children ? 16 : 14; // utime, stime are fields 14, 15; cutime, cstime 16, 17
    for (int i = 3; i <= first + 1 && rest >> field; ++i)
        if (i == first || i == first + 1) ticks += std::stoull(field);
    long hz = ::sysconf(_SC_CLK_TCK);
    return std::chrono::nanoseconds(ticks * 1'000'000'000ULL / static_cast<unsigned long long>(hz));
}

std::chrono::nanoseconds machine_busy_time() {
    std::ifstream stat("/proc/stat");
    std::string cpu;
    stat >> cpu; // "cpu": the sum over all cores
    unsigned long long v[10] = {};
    for (auto& x : v) stat >> x;
    // user nice system idle iowait irq softirq steal guest guest_nice;
    // guest time is counted in user already.
    unsigned long long busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
    long hz = ::sysconf(_SC_CLK_TCK);
    return std::chrono::nanoseconds(busy * 1'000'000'000ULL / static_cast<unsigned long long>(hz));
}

std::uint64_t machine_context_switches() {
    std::ifstream stat("/proc/stat");
    std::string key;
    while (stat >> key) {
        if (key == "ctxt") {
            std::uint64_t n = 0;
            stat >> n;
            return n;
        }
        std::getline(stat, key);
    }
    return 0;
}

} // namespace foreman::bench
