#include "broker/run_as.hpp"

#include <charconv>
#include <grp.h>
#include <pwd.h>
#include <stdexcept>
#include <unistd.h>
#include <vector>

namespace foreman::broker {

spawn::Credentials resolve_run_as(const std::string& user, bool allow_root) {
    std::vector<char> buffer(16384);
    passwd pw{};
    passwd* found = nullptr;
    uid_t numeric = 0;
    auto [end, ec] = std::from_chars(user.data(), user.data() + user.size(), numeric);
    bool is_number = !user.empty() && ec == std::errc() && end == user.data() + user.size();
    int rc = is_number ? ::getpwuid_r(numeric, &pw, buffer.data(), buffer.size(), &found)
                       : ::getpwnam_r(user.c_str(), &pw, buffer.data(), buffer.size(), &found);
    if (rc != 0 || !found) throw std::runtime_error("run_as: no such user '" + user + "'");
    if (pw.pw_uid == 0 && !allow_root)
        throw std::runtime_error("run_as: '" + user + "' is root; set allow_root=yes to allow it");
    spawn::Credentials c{pw.pw_uid, pw.pw_gid, {}};
    int count = 32;
    c.groups.resize(static_cast<std::size_t>(count));
    while (::getgrouplist(pw.pw_name, pw.pw_gid, c.groups.data(), &count) < 0)
        c.groups.resize(static_cast<std::size_t>(count));
    c.groups.resize(static_cast<std::size_t>(count));
    return c;
}

} // namespace foreman::broker
