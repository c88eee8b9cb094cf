#include "bench/broker_process.hpp"

#include "broker/unix_socket.hpp"

#include <csignal>
#include <fcntl.h>
#include <fstream>
#include <poll.h>
#include <sstream>
#include <stdexcept>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

namespace foreman::bench {

std::string bin_dir() {
    char buf[4096];
    ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n <= 0) throw std::runtime_error("readlink /proc/self/exe failed");
    std::string exe(buf, static_cast<std::size_t>(n));
    return exe.substr(0, exe.rfind('/'));
}

ScratchDir::ScratchDir() {
    char tmpl[] = "/tmp/foreman-bench-XXXXXX";
    if (!::mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
}

ScratchDir::~ScratchDir() {
    std::string cmd = "rm -rf '" + path_ + "'";
    [[maybe_unused]] int rc = std::system(cmd.c_str());
}

BrokerProcess::BrokerProcess(const std::string& dir, std::string config) {
    if (config.find("runtime_dir") == std::string::npos) config = "runtime_dir = " + dir + "/run\n" + config;
    std::string conf = dir + "/foreman.conf";
    std::ofstream(conf) << config;
    socket_ = dir + "/run/foreman.sock";
    if (auto pos = config.find("control_socket"); pos != std::string::npos) {
        auto eq = config.find('=', pos), nl = config.find('\n', pos);
        std::string value = config.substr(eq + 1, nl - eq - 1);
        value.erase(0, value.find_first_not_of(" \t"));
        value.erase(value.find_last_not_of(" \t") + 1);
        socket_ = value;
    }
    log_ = dir + "/foreman.log";
    std::string foreman = bin_dir() + "/foreman";
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
        int log = ::open(log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        int null = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
        ::dup2(null, 0);
        ::dup2(log, 2);
        ::execl(foreman.c_str(), foreman.c_str(), "--config", conf.c_str(), "--log-level=warning",
                static_cast<char*>(nullptr));
        ::_exit(127);
    }
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < deadline) {
        std::error_code ec;
        if (broker::connect_unix(socket_, ec)) return;
        int status = 0;
        if (::waitpid(pid_, &status, WNOHANG) == pid_) {
            pid_ = -1;
            std::ifstream in(log_);
            std::stringstream ss;
            ss << in.rdbuf();
            throw std::runtime_error("foreman exited at start: " + ss.str());
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    stop();
    throw std::runtime_error("foreman did not listen on " + socket_ + " within 10 s");
}

BrokerProcess::~BrokerProcess() { stop(); }

int BrokerProcess::stop() {
    if (pid_ < 0) return 0;
    ::kill(pid_, SIGTERM);
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;
    return status;
}

std::chrono::nanoseconds BrokerProcess::cpu_time() const {
    std::ifstream stat("/proc/" + std::to_string(pid_) + "/stat");
    std::string line;
    std::getline(stat, line);
    std::istringstream rest(line.substr(line.rfind(')') + 2));
    std::string field;
    unsigned long long utime = 0, stime = 0;
    for (int i = 3; i <= 15 && rest >> field; ++i) {
        if (i == 14) utime = std::stoull(field);
        if (i == 15) stime = std::stoull(field);
    }
    long hz = ::sysconf(_SC_CLK_TCK);
    return std::chrono::nanoseconds((utime + stime) * 1'000'000'000ULL / static_cast<unsigned long long>(hz));
}

std::size_t BrokerProcess::rss_bytes() const {
    std::ifstream status("/proc/" + std::to_string(pid_) + "/status");
    std::string key;
    std::size_t kb = 0;
    while (status >> key) {
        if (key == "VmRSS:") {
            status >> kb;
            return kb * 1024;
        }
        std::string rest;
        std::getline(status, rest);
    }
    return 0;
}

} // namespace foreman::bench
