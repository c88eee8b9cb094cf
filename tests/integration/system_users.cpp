#include "system_users.hpp"

#include "broker_harness.hpp"

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <fstream>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <sys/file.h>
#include <unistd.h>

namespace foreman::test {
namespace {

constexpr const char* prefix = "foreman-t";
const std::string useradd = "/usr/sbin/useradd";
const std::string userdel = "/usr/sbin/userdel";
const std::string groupadd = "/usr/sbin/groupadd";
const std::string groupdel = "/usr/sbin/groupdel";

/// useradd and userdel of two test processes at once (ctest -j2) would fail
/// on each other's lock of /etc/passwd: take turns.
/// Best effort: without the lock, a clash shows as a failed useradd.
class UserDbLock {
public:
    UserDbLock() : fd_(::open("/tmp/foreman-test-users.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600)) {
        if (fd_ >= 0) ::flock(fd_, LOCK_EX);
    }
    ~UserDbLock() {
        if (fd_ >= 0) ::close(fd_);
    }

private:
    int fd_;
};

void run(const std::vector<std::string>& argv) {
    ProcessResult r = run_process(argv);
    INFO(argv[0] << " " << (argv.size() > 1 ? argv.back() : "") << ": " << r.err);
    REQUIRE(r.status == 0);
}

/// The pid in a name foreman-t<pid>-..., or 0.
pid_t owner_of(const std::string& name) {
    if (name.rfind(prefix, 0) != 0) return 0;
    try {
        return static_cast<pid_t>(std::stol(name.substr(std::string(prefix).size())));
    } catch (...) {
        return 0;
    }
}

/// Names in the first column of /etc/passwd or /etc/group left by dead test processes.
std::vector<std::string> leftovers(const char* file) {
    std::vector<std::string> names;
    std::ifstream in(file);
    std::string line;
    while (std::getline(in, line)) {
        std::string name = line.substr(0, line.find(':'));
        pid_t pid = owner_of(name);
        if (pid > 0 && ::kill(pid, 0) != 0 && errno == ESRCH) names.push_back(name);
    }
    return names;
}

} // namespace

bool SystemUsers::available() { return ::geteuid() == 0 && ::access(useradd.c_str(), X_OK) == 0; }

SystemUsers::SystemUsers(int count) {
    REQUIRE(available());
    UserDbLock lock;
    for (const auto& name : leftovers("/etc/passwd")) run_process({userdel, name});
    for (const auto& name : leftovers("/etc/group")) run_process({groupdel, name});

    const std::string base = prefix + std::to_string(::getpid()) + "-";
    group_ = base + "g";
    run({groupadd, group_});
    const struct group* g = ::getgrnam(group_.c_str());
    REQUIRE(g);
    group_gid_ = g->gr_gid;
    for (int i = 0; i < count; ++i) {
        const std::string name = base + std::to_string(i);
        std::vector<std::string> argv{useradd, "--no-create-home", "--shell", "/usr/sbin/nologin", "--user-group"};
        if (i == 0) argv.insert(argv.end(), {"--groups", group_});
        argv.push_back(name);
        run(argv);
        const passwd* pw = ::getpwnam(name.c_str());
        REQUIRE(pw);
        users_.push_back(User{name, pw->pw_uid, pw->pw_gid});
    }
}

SystemUsers::~SystemUsers() {
    // No REQUIRE here: a destructor runs during a failing test's unwinding.
    UserDbLock lock;
    for (const auto& u : users_) run_process({userdel, u.name});
    if (!group_.empty()) run_process({groupdel, group_});
}

} // namespace foreman::test
