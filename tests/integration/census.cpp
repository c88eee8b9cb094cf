#include "census.hpp"

#include "client/connection.hpp"

#include <catch2/catch.hpp>

#include <boost/json.hpp>

#include <algorithm>
#include <cstring>
#include <csignal>
#include <dirent.h>
#include <fstream>
#include <sstream>
#include <unistd.h>

namespace foreman::test {

namespace {

using Clock = std::chrono::steady_clock;

/// "socket:[123]" → "socket", "pipe:[7]" → "pipe"; anon inodes and paths as they are.
std::string kind_of(const std::string& target) {
    for (const char* k : {"socket:[", "pipe:["})
        if (target.rfind(k, 0) == 0) return std::string(k, std::strlen(k) - 2);
    return target;
}

bool is_worker_kind(const std::string& kind) { return kind == "pipe" || kind == "anon_inode:[pidfd]"; }

/// Asio's reactor descriptors: made once per io_context on its first use.
bool is_reactor_kind(const std::string& kind) {
    return kind == "anon_inode:[eventpoll]" || kind == "anon_inode:[eventfd]" || kind == "anon_inode:[timerfd]";
}

/// Fields of /proc/<pid>/stat after the command: state, ppid, pgrp, session.
struct ProcStat {
    char state = '?';
    int session = 0;
};

std::optional<ProcStat> proc_stat(int pid) {
    std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    if (!std::getline(f, line)) return std::nullopt;
    auto close = line.rfind(')');
    if (close == std::string::npos) return std::nullopt;
    std::istringstream rest(line.substr(close + 2));
    ProcStat s;
    int ppid = 0, pgrp = 0;
    rest >> s.state >> ppid >> pgrp >> s.session;
    if (!rest) return std::nullopt;
    return s;
}

std::vector<int> numeric_entries(const std::string& dir) {
    std::vector<int> out;
    DIR* d = ::opendir(dir.c_str());
    if (!d) return out;
    while (dirent* e = ::readdir(d))
        if (e->d_name[0] >= '0' && e->d_name[0] <= '9') out.push_back(std::atoi(e->d_name));
    ::closedir(d);
    return out;
}

/// Runs and not a zombie.
bool alive(int pid) { return ::kill(pid, 0) == 0 && !is_zombie(pid); }

std::string join(const std::vector<int>& v) {
    std::string s;
    for (int x : v) s += (s.empty() ? "" : " ") + std::to_string(x);
    return s;
}

} // namespace

struct Census::Reader {
    virtual ~Reader() = default;
    /// nullopt when the broker cannot be asked (gone).
    virtual std::optional<BrokerState> read() = 0;
};

namespace {

struct HarnessReader : Census::Reader {
    BrokerHarness& h;
    client::Connection anchor; ///< the broker serves: run() has started
    explicit HarnessReader(BrokerHarness& harness)
        : h(harness), anchor(client::Connection::connect(harness.broker().global().control_socket)) {}
    std::optional<BrokerState> read() override {
        BrokerState st;
        for (auto& p : h.snapshot().pools) {
            st.queued += p.queued;
            for (auto& w : p.workers) {
                if (w.pid > 0) st.worker_pids.push_back(w.pid);
                else st.spawning += 1;
                st.leases += w.lease.has_value();
                st.stopping += w.state == lease::WorkerState::stopping;
            }
        }
        return st;
    }
};

struct StatusReader : Census::Reader {
    std::optional<client::Connection> conn;
    explicit StatusReader(const std::string& socket) : conn(client::Connection::connect(socket)) {}
    std::optional<BrokerState> read() override {
        if (!conn) return std::nullopt;
        boost::json::value status;
        try {
            status = conn->status();
        } catch (const std::exception&) {
            conn.reset();
            return std::nullopt;
        }
        auto num = [](const boost::json::value& v) {
            return v.is_uint64() ? static_cast<std::int64_t>(v.as_uint64()) : v.as_int64();
        };
        BrokerState st;
        for (auto& p : status.at("pools").as_array()) {
            st.queued += static_cast<std::size_t>(num(p.at("queued")));
            for (auto& w : p.at("workers").as_array()) {
                int pid = static_cast<int>(num(w.at("pid")));
                if (pid > 0) st.worker_pids.push_back(pid);
                else st.spawning += 1;
                std::string state(w.at("state").as_string());
                st.leases += state == "leased";
                st.stopping += state == "stopping";
            }
        }
        return st;
    }
};

} // namespace

Census::Census(BrokerHarness& h) : pid_(::getpid()), reader_(std::make_unique<HarnessReader>(h)) {
    take_baseline();
}

Census::Census(int pid, const std::string& control_socket)
    : pid_(pid), reader_(std::make_unique<StatusReader>(control_socket)) {
    take_baseline();
}

void Census::take_baseline() {
    auto deadline = Clock::now() + std::chrono::milliseconds(5000) * sanitizer_slowdown;
    // Still for a few looks in a row: a worker's output pipe is closed (on
    // its EOF) a moment after the worker is reaped, a spawn's pipes a moment
    // after it is reported.
    constexpr int looks = 3;
    int still_for = 0;
    std::optional<BrokerState> last;
    std::map<int, std::string> fds;
    for (;;) {
        auto st = reader_->read();
        REQUIRE(st.has_value());
        auto now_fds = open_fds(pid_);
        bool same = st->spawning == 0 && last && last->worker_pids == st->worker_pids && now_fds == fds;
        still_for = same ? still_for + 1 : 0;
        last = st;
        fds = std::move(now_fds);
        bool still = still_for + 1 >= looks;
        if (still || Clock::now() >= deadline) {
            REQUIRE(still);
            base_workers_ = last->worker_pids.size();
            seen_.insert(last->worker_pids.begin(), last->worker_pids.end());
            base_fds_ = std::move(fds);
            return;
        }
        ::usleep(10000);
    }
}

Census::~Census() = default;

void Census::hold(int fd) { held_.insert(fd); }

void Census::look() {
    if (auto st = reader_->read()) seen_.insert(st->worker_pids.begin(), st->worker_pids.end());
}

void Census::saw_worker(int pid) {
    if (pid > 0) seen_.insert(pid);
}

void Census::expect_answer(const std::string& request) { answers_.emplace(request, false); }

void Census::answered(const std::string& request) { answers_[request] = true; }

std::map<std::string, int> Census::descriptor_kinds(int pid, const std::set<int>& skip) {
    std::map<std::string, int> kinds;
    for (auto& [fd, target] : open_fds(pid))
        if (!skip.count(fd)) ++kinds[kind_of(target)];
    return kinds;
}

std::vector<int> Census::session_members(int sid) {
    std::vector<int> out;
    for (int pid : numeric_entries("/proc")) {
        auto s = proc_stat(pid);
        if (s && s->session == sid && s->state != 'Z' && s->state != 'X') out.push_back(pid);
    }
    return out;
}

std::vector<int> Census::zombie_children(int pid) {
    std::vector<int> out;
    std::string task_dir = "/proc/" + std::to_string(pid) + "/task";
    for (int tid : numeric_entries(task_dir)) {
        std::ifstream children(task_dir + "/" + std::to_string(tid) + "/children");
        for (int child; children >> child;)
            if (is_zombie(child)) out.push_back(child);
    }
    return out;
}

std::vector<std::string> Census::unanswered() const {
    std::vector<std::string> out;
    for (auto& [request, done] : answers_)
        if (!done) out.push_back("no answer to " + request);
    return out;
}

std::vector<std::string> Census::survivors() const {
    std::vector<std::string> out;
    for (int pid : seen_) {
        if (alive(pid)) continue; // judged by the caller
        auto members = session_members(pid);
        if (!members.empty())
            out.push_back("orphans in the session of gone worker " + std::to_string(pid) + ": " + join(members));
    }
    return out;
}

std::vector<std::string> Census::losses(const BrokerState& now) {
    std::vector<std::string> out;
    if (now.leases) out.push_back(std::to_string(now.leases) + " leases still live");
    if (now.queued) out.push_back(std::to_string(now.queued) + " LEASEs still queued");
    if (now.stopping) out.push_back(std::to_string(now.stopping) + " workers still stopping");
    if (now.spawning) out.push_back(std::to_string(now.spawning) + " workers still spawning");
    if (auto z = zombie_children(pid_); !z.empty()) out.push_back("zombie children: " + join(z));
    for (int pid : seen_)
        if (alive(pid) && std::find(now.worker_pids.begin(), now.worker_pids.end(), pid) == now.worker_pids.end())
            out.push_back("worker " + std::to_string(pid) + " runs but is not the broker's any more");
    auto s = survivors();
    out.insert(out.end(), s.begin(), s.end());

    // Descriptors: the baseline's kinds, with each worker process's pidfd and
    // output pipe allowed for, against what is open now.
    std::map<std::string, int> expected;
    for (auto& [fd, target] : base_fds_)
        if (!held_.count(fd)) ++expected[kind_of(target)];
    int worker_delta = static_cast<int>(now.worker_pids.size()) - static_cast<int>(base_workers_);
    for (const char* k : {"pipe", "anon_inode:[pidfd]"}) expected[k] += worker_delta;
    auto actual = descriptor_kinds(pid_, held_);
    std::set<std::string> kinds;
    for (auto& [k, n] : expected) kinds.insert(k);
    for (auto& [k, n] : actual) kinds.insert(k);
    for (auto& k : kinds) {
        if (is_reactor_kind(k)) continue;
        int want = expected.count(k) ? expected[k] : 0;
        int got = actual.count(k) ? actual[k] : 0;
        // Fewer worker descriptors than expected is no leak: a worker's pipe
        // may still have been open at the baseline, its process gone already.
        if (want != got && !(is_worker_kind(k) && got < want))
            out.push_back("descriptors of kind " + k + ": " + std::to_string(got) + ", baseline " +
                          std::to_string(want) + (is_worker_kind(k) ? " (with one per worker process)" : ""));
    }
    auto u = unanswered();
    out.insert(out.end(), u.begin(), u.end());
    return out;
}

void Census::expect_nothing_lost(std::chrono::milliseconds timeout) {
    auto deadline = Clock::now() + timeout;
    std::vector<std::string> lost;
    for (;;) {
        auto st = reader_->read();
        if (!st) {
            lost = {"the broker does not answer STATUS"};
        } else {
            seen_.insert(st->worker_pids.begin(), st->worker_pids.end());
            lost = losses(*st);
        }
        if (lost.empty() || Clock::now() >= deadline) break;
        ::usleep(5000); // /proc and STATUS: polled under the deadline
    }
    for (auto& l : lost) FAIL_CHECK("lost after the fault: " << l);
    CHECK(lost.empty());
}

void Census::expect_no_survivor(std::chrono::milliseconds timeout) {
    auto deadline = Clock::now() + timeout;
    std::vector<std::string> lost;
    for (;;) {
        lost.clear();
        for (int pid : seen_)
            if (alive(pid)) lost.push_back("worker " + std::to_string(pid) + " outlived the broker");
        auto s = survivors();
        lost.insert(lost.end(), s.begin(), s.end());
        if (lost.empty() || Clock::now() >= deadline) break;
        ::usleep(5000);
    }
    auto u = unanswered();
    lost.insert(lost.end(), u.begin(), u.end());
    for (auto& l : lost) FAIL_CHECK("lost with the broker: " << l);
    CHECK(lost.empty());
}

} // namespace foreman::test
