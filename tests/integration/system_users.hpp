#pragma once
// Real users for tests that run as root (run_as, per-user workers): created
// with useradd when a test starts and removed with userdel when it ends, so a
// test never depends on what accounts the machine happens to have.

#include <string>
#include <sys/types.h>
#include <vector>

namespace foreman::test {

class SystemUsers {
public:
    struct User {
        std::string name;
        uid_t uid;
        gid_t gid; ///< its own primary group (useradd --user-group)
    };

    /// Creates `count` users named foreman-t<pid>-<i>, and one group
    /// foreman-t<pid>-g that the first user has as a supplementary group.
    /// Also removes users and groups of that form left by test processes
    /// that are gone (a crashed test cannot clean up). Fails the test when
    /// a command fails; call only as root.
    explicit SystemUsers(int count);
    ~SystemUsers();
    SystemUsers(const SystemUsers&) = delete;
    SystemUsers& operator=(const SystemUsers&) = delete;

    const std::vector<User>& users() const { return users_; }
    const User& operator[](std::size_t i) const { return users_.at(i); }
    const std::string& group() const { return group_; }
    gid_t group_gid() const { return group_gid_; }

    /// Whether this machine can create users (root, and useradd exists).
    static bool available();

private:
    std::vector<User> users_;
    std::string group_;
    gid_t group_gid_ = 0;
};

} // namespace foreman::test
