#include "broker/worker_launch.hpp"

#include <array>

namespace foreman::broker {
namespace {

bool starts_with(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }

} // namespace

std::string expand_placeholders(std::string_view arg, const PoolConfig& pool, const WorkerPlacement& where) {
    const std::array<std::pair<std::string_view, std::string_view>, 4> names{{
        {"{socket}", where.socket_path},
        {"{protocol}", pool.name},
        {"{worker}", where.id},
        {"{user}", where.user},
    }};
    std::string out;
    out.reserve(arg.size());
    while (!arg.empty()) {
        bool replaced = false;
        if (arg.front() == '{') {
            for (auto& [name, value] : names) {
                if (starts_with(arg, name)) {
                    out.append(value);
                    arg.remove_prefix(name.size());
                    replaced = true;
                    break;
                }
            }
        }
        if (!replaced) {
            out.push_back(arg.front());
            arg.remove_prefix(1);
        }
    }
    return out;
}

std::vector<std::string> inheritable_environment(const char* const* env) {
    static constexpr std::string_view dropped[] = {
        "LISTEN_FDS=", "LISTEN_PID=", "LISTEN_FDNAMES=", "NOTIFY_SOCKET=",
        "WATCHDOG_USEC=", "WATCHDOG_PID=", "FOREMAN_",
    };
    std::vector<std::string> out;
    for (; env && *env; ++env) {
        std::string_view entry(*env);
        bool keep = true;
        for (auto prefix : dropped) keep = keep && !starts_with(entry, prefix);
        if (keep) out.emplace_back(entry);
    }
    return out;
}

spawn::LaunchSpec make_launch_spec(const PoolConfig& pool, const WorkerPlacement& where,
                                   const std::vector<std::string>& inherited_env) {
    spawn::LaunchSpec spec;
    spec.path = pool.path;
    spec.argv.push_back(pool.path);
    for (auto& arg : pool.args) spec.argv.push_back(expand_placeholders(arg, pool, where));

    spec.env = inherited_env;
    auto set = [&](std::string key, const std::string& value) { spec.env.push_back(key + "=" + value); };
    set("FOREMAN_PROTOCOL", pool.name);
    set("FOREMAN_VERSION", std::to_string(pool.limits.version));
    set("FOREMAN_WORKER_ID", where.id);
    set("FOREMAN_SOCKET", where.socket_path);
    if (pool.limits.per_user) set("FOREMAN_USER", where.user);
    if (pool.listen == ListenMode::activation) {
        set("LISTEN_FDS", "1");
        set("LISTEN_FDNAMES", pool.name);
        spec.set_listen_pid = true; // the child writes its own pid
    }
    if (pool.limits.notify != lease::NotifyMode::none) {
        set("NOTIFY_SOCKET", where.notify_socket);
        if (pool.limits.heartbeat_timeout.count() > 0) {
            set("WATCHDOG_USEC", std::to_string(pool.limits.heartbeat_timeout.count() * 1000));
            spec.set_watchdog_pid = true;
        }
    }
    return spec;
}

} // namespace foreman::broker
