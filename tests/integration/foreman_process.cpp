#include "foreman_process.hpp"

#include <catch2/catch.hpp>

#include <csignal>
#include <fcntl.h>
#include <fstream>
#include <poll.h>
#include <sstream>
#include <sys/syscall.h>
#include <sys/wait.h>

namespace foreman::test {

std::string foreman_bin() { return std::string(FOREMAN_BIN_DIR) + "/foreman"; }

std::string read_file(const std::string& path) {
    std::ifstream f(path);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

ForemanProcess::ForemanProcess(const std::string& dir, std::vector<std::string> args)
    : stdout_path_(dir + "/foreman.stdout"), stderr_path_(dir + "/foreman.stderr") {
    args.insert(args.begin(), foreman_bin());
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    // Opened before the fork: the child only dup2()s and execs.
    int in = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    int out = ::open(stdout_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int err = ::open(stderr_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    REQUIRE((in >= 0 && out >= 0 && err >= 0));
    pid_ = ::fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
        sigset_t none;
        sigemptyset(&none);
        ::sigprocmask(SIG_SETMASK, &none, nullptr);
        if (::dup2(in, 0) < 0 || ::dup2(out, 1) < 0 || ::dup2(err, 2) < 0) ::_exit(126);
        ::execv(argv[0], argv.data());
        ::_exit(127);
    }
    ::close(in);
    ::close(out);
    ::close(err);
}

ForemanProcess::~ForemanProcess() {
    if (reaped_) return;
    ::kill(pid_, SIGKILL);
    int status;
    ::waitpid(pid_, &status, 0);
}

void ForemanProcess::signal(int sig) const { REQUIRE(::kill(pid_, sig) == 0); }

std::optional<int> ForemanProcess::wait_exit(std::chrono::milliseconds timeout) {
    if (!reaped_) {
        int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid_, 0));
        REQUIRE(fd >= 0);
        pollfd p{fd, POLLIN, 0};
        int r = ::poll(&p, 1, static_cast<int>(timeout.count()));
        ::close(fd);
        if (r != 1) return std::nullopt;
        REQUIRE(::waitpid(pid_, &status_, 0) == pid_);
        reaped_ = true;
    }
    return status_;
}

bool ForemanProcess::wait_handling_signals(std::chrono::milliseconds timeout) const {
    const unsigned long wanted = (1UL << (SIGTERM - 1)) | (1UL << (SIGHUP - 1));
    std::string status_file = "/proc/" + std::to_string(pid_) + "/status";
    return poll_until(
        [&] {
            std::ifstream f(status_file);
            std::string line;
            unsigned long taken = 0;
            while (std::getline(f, line))
                if (line.rfind("SigBlk:", 0) == 0 || line.rfind("SigCgt:", 0) == 0)
                    taken |= std::stoul(line.substr(7), nullptr, 16);
            return (taken & wanted) == wanted;
        },
        timeout);
}

bool ForemanProcess::wait_stderr(const std::string& text, std::chrono::milliseconds timeout) const {
    return poll_until([&] { return err().find(text) != std::string::npos; }, timeout);
}

} // namespace foreman::test
