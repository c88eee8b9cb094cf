#include "bench/soak_broker_state.hpp"

#include <boost/json.hpp>

#include <dirent.h>
#include <fstream>
#include <string>
#include <thread>

namespace foreman::bench {

namespace {

using Clock = std::chrono::steady_clock;

/// Whether `name` is all digits (a pid's folder in /proc).
bool is_pid_name(const char* name) {
    if (*name == '\0') return false;
    for (; *name; ++name)
        if (*name < '0' || *name > '9') return false;
    return true;
}

/// State letter and parent pid from /proc/<pid>/stat; false when it is gone.
/// The command name is in parentheses and may hold anything, so the fields
/// are read after the last ')'.
bool read_stat(const std::string& pid, char& state, pid_t& ppid) {
    std::ifstream in("/proc/" + pid + "/stat");
    std::string line;
    if (!std::getline(in, line)) return false;
    auto close = line.rfind(')');
    if (close == std::string::npos || close + 2 >= line.size()) return false;
    std::size_t at = close + 2;
    state = line[at];
    try {
        ppid = static_cast<pid_t>(std::stol(line.substr(at + 2)));
    } catch (...) {
        return false;
    }
    return true;
}

} // namespace

namespace {

/// Entries of a /proc folder whose names are numbers, or -1.
int numbered_entries(const std::string& folder) {
    DIR* dir = ::opendir(folder.c_str());
    if (!dir) return -1;
    int n = 0;
    while (auto* e = ::readdir(dir))
        if (is_pid_name(e->d_name)) ++n; // skips "." and ".."
    ::closedir(dir);
    return n;
}

} // namespace

int open_fd_count(pid_t pid) { return numbered_entries("/proc/" + std::to_string(pid) + "/fd"); }

int thread_count(pid_t pid) { return numbered_entries("/proc/" + std::to_string(pid) + "/task"); }

std::vector<pid_t> zombie_children(pid_t pid) {
    std::vector<pid_t> out;
    DIR* proc = ::opendir("/proc");
    if (!proc) return out;
    while (auto* e = ::readdir(proc)) {
        if (!is_pid_name(e->d_name)) continue;
        char state = 0;
        pid_t ppid = 0;
        if (read_stat(e->d_name, state, ppid) && ppid == pid && state == 'Z')
            out.push_back(static_cast<pid_t>(std::stol(e->d_name)));
    }
    ::closedir(proc);
    return out;
}

bool has_exited(pid_t pid) {
    char state = 0;
    pid_t ppid = 0;
    return !read_stat(std::to_string(pid), state, ppid) || state == 'Z' || state == 'X';
}

PoolsView pools_view(const boost::json::value& status) {
    PoolsView v;
    for (auto& pool : status.at("pools").as_array()) {
        const auto& p = pool.as_object();
        v.queued += p.at("queued").to_number<std::int64_t>();
        int& idle = v.idle[std::string(p.at("protocol").as_string())];
        for (auto& w : p.at("workers").as_array()) {
            const auto& state = w.at("state").as_string();
            if (state == "idle") ++idle;
            else if (state == "leased") ++v.leased;
            else if (state == "starting") ++v.starting;
            else ++v.stopping;
            if (auto* lease = w.as_object().if_contains("lease"))
                v.live_leases.push_back(lease->to_number<std::uint64_t>());
        }
    }
    return v;
}

bool lease_live(const boost::json::value& status, std::uint64_t id) {
    for (auto& pool : status.at("pools").as_array())
        for (auto& w : pool.at("workers").as_array())
            if (auto* lease = w.as_object().if_contains("lease"); lease && lease->to_number<std::uint64_t>() == id)
                return true;
    return false;
}

RestState wait_at_rest(client::Connection& monitor, pid_t broker, const std::map<std::string, int>& idle,
                       std::optional<int> fds, std::chrono::milliseconds limit) {
    const auto start = Clock::now();
    RestState s;
    for (;;) {
        s.pools = pools_view(monitor.status());
        s.fds = open_fd_count(broker);
        s.zombies = zombie_children(broker);
        s.at_rest = s.pools.leased == 0 && s.pools.starting == 0 && s.pools.stopping == 0 && s.pools.queued == 0 &&
                    s.pools.idle == idle && s.zombies.empty() && (!fds || s.fds == *fds);
        s.waited = Clock::now() - start;
        if (s.at_rest || s.waited >= limit) return s;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
}

} // namespace foreman::bench
