#include "spawn/child_setup.hpp"

#include <cerrno>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <grp.h>
#include <sys/prctl.h>
#include <unistd.h>

namespace foreman::spawn {
namespace {

/// Descriptors are first lifted to this number or above, so that moving them
/// down to 0..3 cannot overwrite one with another.
constexpr int lift_floor = 10;

constexpr char listen_prefix[] = "LISTEN_PID=";
constexpr char watchdog_prefix[] = "WATCHDOG_PID=";

} // namespace

ChildSetup::ChildSetup(const LaunchSpec& spec) : spec_(spec), parent_(::getpid()) {
    argv_.reserve(spec.argv.size() + 1);
    for (auto& a : spec.argv) argv_.push_back(a.c_str());
    argv_.push_back(nullptr);
    envp_.reserve(spec.env.size() + 3);
    for (auto& e : spec.env) envp_.push_back(e.c_str());
    std::memcpy(listen_pid_.data(), listen_prefix, sizeof listen_prefix);
    std::memcpy(watchdog_pid_.data(), watchdog_prefix, sizeof watchdog_prefix);
    if (spec.set_listen_pid) envp_.push_back(listen_pid_.data());
    if (spec.set_watchdog_pid) envp_.push_back(watchdog_pid_.data());
    envp_.push_back(nullptr);
}

void ChildSetup::write_pid(char* digits, pid_t pid) {
    char reversed[24];
    int n = 0;
    auto value = static_cast<unsigned long>(pid);
    do {
        reversed[n++] = static_cast<char>('0' + value % 10);
        value /= 10;
    } while (value != 0);
    while (n > 0) *digits++ = reversed[--n];
    *digits = '\0';
}

void ChildSetup::fail(int error_pipe, int err) {
    // The parent reads one int from this pipe: the errno.
    [[maybe_unused]] auto n = ::write(error_pipe, &err, sizeof err);
    ::_exit(127);
}

void ChildSetup::run_in_child(int error_pipe_in) {
    // Lift the error pipe out of the way of fds 0..3 first.
    int error_pipe = ::fcntl(error_pipe_in, F_DUPFD_CLOEXEC, lift_floor);
    if (error_pipe < 0) ::_exit(127);

    // A clean signal state: the broker ignores SIGPIPE, and ignored signals
    // and the mask survive exec.
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    for (int s = 1; s < NSIG; ++s)
        if (s != SIGKILL && s != SIGSTOP) ::sigaction(s, &dfl, nullptr);

    // Its own session and process group, so that signals to the group reach
    // its children too; and death with the broker.
    if (::setsid() < 0) fail(error_pipe, errno);
    if (::prctl(PR_SET_PDEATHSIG, SIGKILL) < 0) fail(error_pipe, errno);
    if (::getppid() != parent_) fail(error_pipe, ESRCH); // the broker died before prctl

    int null_fd = ::open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null_fd < 0) fail(error_pipe, errno);
    int null_hi = ::fcntl(null_fd, F_DUPFD_CLOEXEC, lift_floor);
    int out_hi = spec_.output_fd >= 0 ? ::fcntl(spec_.output_fd, F_DUPFD_CLOEXEC, lift_floor) : null_hi;
    int act_hi = spec_.activation_fd >= 0 ? ::fcntl(spec_.activation_fd, F_DUPFD_CLOEXEC, lift_floor) : -1;
    if (null_hi < 0 || out_hi < 0 || (spec_.activation_fd >= 0 && act_hi < 0)) fail(error_pipe, errno);
    // dup2 clears close-on-exec on the copy: these four survive exec.
    if (::dup2(null_hi, 0) < 0 || ::dup2(out_hi, 1) < 0 || ::dup2(out_hi, 2) < 0) fail(error_pipe, errno);
    if (act_hi >= 0 && ::dup2(act_hi, 3) < 0) fail(error_pipe, errno);

    if (spec_.has_credentials) {
        const auto& c = spec_.credentials;
        if (::setgroups(c.groups.size(), c.groups.data()) < 0) fail(error_pipe, errno);
        if (::setgid(c.gid) < 0) fail(error_pipe, errno);
        if (::setuid(c.uid) < 0) fail(error_pipe, errno);
    }

    pid_t self = ::getpid();
    write_pid(listen_pid_.data() + sizeof listen_prefix - 1, self);
    write_pid(watchdog_pid_.data() + sizeof watchdog_prefix - 1, self);

    // Every other descriptor of the broker's closes at exec, whatever Asio
    // or another thread opened without FD_CLOEXEC.
    unsigned first_closed = act_hi >= 0 ? 4 : 3;
    if (::close_range(first_closed, ~0U, CLOSE_RANGE_CLOEXEC) < 0) fail(error_pipe, errno);

    ::execve(spec_.path.c_str(), const_cast<char* const*>(argv_.data()),
             const_cast<char* const*>(envp_.data()));
    fail(error_pipe, errno);
}

} // namespace foreman::spawn
