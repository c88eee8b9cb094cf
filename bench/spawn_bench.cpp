// spawn_bench: spawn-to-ready latency of the echo worker under foreman,
// against a raw fork+exec+connect-until-ready of the same binary measured in
// the same run, and spawns per second (issue 3; figures in bench/RESULTS.md).
//
//   spawn_bench [--quick] [--n N] [--seconds S] [--concurrency C] [--breakdown] [--log]
//
// Rows (latencies in µs):
//   raw spin            fork+execve `foreman-echo PATH` (it binds PATH), spin
//                       on connect() until it succeeds: from just before fork
//                       to the successful connect.
//   raw yield, raw 50us the same, with sched_yield() or a 50 µs sleep between
//                       attempts: on 2 cores a spinning parent delays the
//                       child it waits for, so these are the fair baselines.
//   raw probe-backoff   the same, but connect() retried on the schedule of
//                       broker/readiness_probe.hpp (1 ms doubling to 100 ms):
//                       what that schedule alone costs.
//   foreman path/none   a cold LEASE (max_requests=1, max_instances=1, the
//                       previous worker reaped) to its grant callback: spawn,
//                       readiness by connect polling, the broker's connect for
//                       the handoff.
//   foreman act/foreman the same with listen=activation, notify=foreman
//                       (readiness by READY=1).
//   grant-only ...      a LEASE served by an idle worker, for reference.
// Then spawns/s: C LEASEs always outstanding against a pool with
// max_requests=1, max_instances=2, each grant released at once.

#include "broker/broker.hpp"
#include "broker/config.hpp"
#include "broker/log.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <sched.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace {

using namespace foreman;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

const std::string echo_bin = FOREMAN_ECHO_BIN;

[[noreturn]] void die(const std::string& what) {
    std::fprintf(stderr, "spawn_bench: %s\n", what.c_str());
    std::exit(1);
}

double micros(Clock::duration d) { return std::chrono::duration<double, std::micro>(d).count(); }

// ---- statistics ------------------------------------------------------------

struct Stats {
    std::size_t n = 0;
    double median = 0, p90 = 0, p99 = 0, max = 0;
};

/// Nearest-rank percentiles.
Stats stats_of(std::vector<double> v) {
    Stats s;
    if (v.empty()) return s;
    std::sort(v.begin(), v.end());
    auto rank = [&](double q) {
        auto i = static_cast<std::size_t>(std::ceil(q * static_cast<double>(v.size())));
        return v[std::clamp<std::size_t>(i, 1, v.size()) - 1];
    };
    s.n = v.size();
    s.median = rank(0.5);
    s.p90 = rank(0.9);
    s.p99 = rank(0.99);
    s.max = v.back();
    return s;
}

// ---- the raw baseline --------------------------------------------------------

/// One connect() attempt to `path`; true when it succeeded.
bool try_connect(const std::string& path) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket: " + std::string(std::strerror(errno)));
    bool ok = ::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0;
    ::close(fd);
    return ok;
}

/// The environment of this process without what would make the echo worker
/// notify someone or look for an activation socket.
std::vector<std::string> clean_environment() {
    std::vector<std::string> env;
    for (char** e = environ; *e; ++e) {
        std::string_view s(*e);
        if (s.starts_with("NOTIFY_SOCKET=") || s.starts_with("LISTEN_") || s.starts_with("WATCHDOG_") ||
            s.starts_with("FOREMAN_"))
            continue;
        env.emplace_back(s);
    }
    return env;
}

enum class RawWait { spin, yield, poll_50us, probe_backoff };

/// fork+execve foreman-echo PATH, wait until a connect() succeeds; returns
/// the time from just before fork to that connect. Then SIGTERM, waitpid.
double raw_spawn(const std::string& path, RawWait how) {
    ::unlink(path.c_str());
    std::vector<std::string> env_strings = clean_environment();
    std::vector<char*> envp;
    for (auto& s : env_strings) envp.push_back(s.data());
    envp.push_back(nullptr);
    std::string arg0 = echo_bin, arg1 = path;
    char* argv[] = {arg0.data(), arg1.data(), nullptr};

    auto t0 = Clock::now();
    pid_t pid = ::fork();
    if (pid < 0) die("fork: " + std::string(std::strerror(errno)));
    if (pid == 0) {
        ::execve(argv[0], argv, envp.data());
        ::_exit(127);
    }
    auto backoff = 1ms;
    for (;;) {
        if (try_connect(path)) break;
        int status;
        if (::waitpid(pid, &status, WNOHANG) == pid) die("foreman-echo exited before it listened");
        if (how == RawWait::yield) ::sched_yield();
        if (how == RawWait::poll_50us) std::this_thread::sleep_for(50us);
        if (how == RawWait::probe_backoff) {
            std::this_thread::sleep_for(backoff);
            backoff = std::min(backoff * 2, std::chrono::milliseconds(100));
        }
    }
    double us = micros(Clock::now() - t0);
    ::kill(pid, SIGTERM);
    int status;
    ::waitpid(pid, &status, 0);
    return us;
}

// ---- foreman in this process -------------------------------------------------------

struct Grant {
    lease::LeaseId lease;
    spawn::unique_fd conn;
    Clock::time_point at;
};

/// Records grants and rejections; the bench waits on them.
class BenchClient : public broker::ClientEvents {
public:
    void granted(lease::Ticket t, lease::LeaseId l, int, std::chrono::milliseconds, spawn::unique_fd c) override {
        auto now = Clock::now();
        std::lock_guard lock(mu_);
        grants_.emplace(t, Grant{l, std::move(c), now});
        order_.push_back(t);
        cv_.notify_all();
    }
    void rejected(lease::Ticket t, protocol::FailCode code, const std::string& text) override {
        die("lease " + std::to_string(t) + " rejected: " + std::string(protocol::to_string(code)) + " " + text);
    }
    void expired(lease::LeaseId, protocol::EndReason) override {}

    Grant wait(lease::Ticket t) {
        std::unique_lock lock(mu_);
        if (!cv_.wait_for(lock, 30s, [&] { return grants_.count(t) != 0; }))
            die("no grant for lease " + std::to_string(t) + " within 30 s");
        Grant g = std::move(grants_.at(t));
        grants_.erase(t);
        order_.erase(std::find(order_.begin(), order_.end(), t));
        return g;
    }
    /// The next grant of any ticket, in the order granted.
    std::optional<std::pair<lease::Ticket, Grant>> next(Clock::time_point deadline) {
        std::unique_lock lock(mu_);
        if (!cv_.wait_until(lock, deadline, [&] { return !order_.empty(); })) return std::nullopt;
        lease::Ticket t = order_.front();
        order_.pop_front();
        Grant g = std::move(grants_.at(t));
        grants_.erase(t);
        return std::pair{t, std::move(g)};
    }

    lease::ClientId id = 0;

private:
    std::mutex mu_;
    std::condition_variable cv_;
    std::map<lease::Ticket, Grant> grants_;
    std::deque<lease::Ticket> order_;
};

/// A broker on its own threads, configured from an INI text.
class BenchBroker {
public:
    BenchBroker(const std::string& dir, const std::string& ini) {
        std::string file = dir + "/foreman.conf";
        std::ofstream(file) << "runtime_dir = " << dir << "/run\n" << ini;
        broker::BrokerOptions options{file, {}, false, nullptr};
        options.observer = [this] {
            if (watching_) watch();
            std::lock_guard lock(mu_);
            ++generation_;
            cv_.notify_all();
        };
        broker_ = std::make_unique<broker::Broker>(broker::load_config(file), std::move(options));
        thread_ = std::thread([this] { broker_->run(); });
        client_ = std::make_shared<BenchClient>();
        client_->id = broker_->open_client(client_);
    }
    ~BenchBroker() {
        broker_->close_client(client_->id);
        broker_->stop();
        thread_.join();
    }

    broker::Broker& broker() { return *broker_; }
    BenchClient& client() { return *client_; }

    lease::Ticket ask(const std::string& pool) {
        lease::LeaseRequest rq;
        rq.ticket = next_ticket_++;
        rq.client = client_->id;
        rq.uid = static_cast<lease::Uid>(::getuid());
        rq.protocol = pool;
        rq.wait = 30000ms;
        broker_->lease(rq);
        return rq.ticket;
    }

    void release(const Grant& g) { broker_->release(g.lease, client_->id, static_cast<lease::Uid>(::getuid())); }

    /// Waits (on the broker's observer, no sleeps) until `pred` holds.
    template <class P>
    void wait_for(P pred, const std::string& what) {
        auto deadline = Clock::now() + 30s;
        for (;;) {
            std::uint64_t seen;
            {
                std::lock_guard lock(mu_);
                seen = generation_;
            }
            if (pred(broker_->snapshot())) return;
            std::unique_lock lock(mu_);
            if (!cv_.wait_until(lock, deadline, [&] { return generation_ != seen; })) {
                if (pred(broker_->snapshot())) return;
                die("timed out waiting for " + what + "; " + describe(broker_->snapshot()));
            }
        }
    }

    /// --breakdown: after every event, when the watched pool's worker first
    /// has a pid (exec done, as the broker learns it). Costs a snapshot per
    /// event, so it runs in a pass of its own.
    void watch_pool(std::string pool) {
        std::lock_guard lock(watch_mu_);
        watched_ = std::move(pool);
        started_at_.reset();
        watching_ = true;
    }
    /// The observer runs after the event's actions: when the start and the
    /// grant are one event (an early READY=1), it sees the pid after the grant.
    std::optional<Clock::time_point> started_at() {
        std::unique_lock lock(watch_mu_);
        watch_cv_.wait_for(lock, 10s, [&] { return started_at_.has_value(); });
        watching_ = false;
        return started_at_;
    }

    static std::string describe(const lease::Snapshot& s) {
        std::string out;
        for (auto& p : s.pools) {
            out += "pool " + p.protocol + " queued=" + std::to_string(p.queued) + ":";
            for (auto& w : p.workers)
                out += " " + std::to_string(w.id) + "/" + std::to_string(w.pid) + "/" +
                       std::to_string(static_cast<int>(w.state)) + (w.lease ? "/leased" : "");
            out += "; ";
        }
        return out;
    }

    static std::size_t workers(const lease::Snapshot& s, const std::string& pool) {
        for (auto& p : s.pools)
            if (p.protocol == pool) return p.workers.size();
        return 0;
    }
    static std::size_t idle(const lease::Snapshot& s, const std::string& pool) {
        std::size_t n = 0;
        for (auto& p : s.pools)
            if (p.protocol == pool)
                for (auto& w : p.workers) n += w.state == lease::WorkerState::idle;
        return n;
    }

private:
    void watch() {
        auto snap = broker_->snapshot();
        auto now = Clock::now();
        std::lock_guard lock(watch_mu_);
        if (started_at_) return;
        for (auto& p : snap.pools)
            if (p.protocol == watched_)
                for (auto& w : p.workers)
                    if (w.pid > 0) started_at_ = now;
        if (started_at_) watch_cv_.notify_all();
    }

    std::atomic<bool> watching_{false};
    std::mutex watch_mu_;
    std::condition_variable watch_cv_;
    std::string watched_;
    std::optional<Clock::time_point> started_at_;
    std::unique_ptr<broker::Broker> broker_;
    std::thread thread_;
    std::shared_ptr<BenchClient> client_;
    lease::Ticket next_ticket_ = 1;
    std::mutex mu_;
    std::condition_variable cv_;
    std::uint64_t generation_ = 0;
};

std::string pool_ini(const std::string& name, const std::string& listen, const std::string& notify,
                     const std::string& extra) {
    return "[pool." + name + "]\npath = " + echo_bin + "\nlisten = " + listen + "\nnotify = " + notify +
           "\nqueue_timeout_ms = 30000\nkill_grace_ms = 2000\n" + extra;
}

const std::string cold_keys = "max_requests = 1\nrecycle_jitter_pct = 0\nmax_instances = 1\n";

/// `n` cold leases of `pool`: each one spawns a worker, because the previous
/// one served its one request and is gone.
std::vector<double> cold_leases(BenchBroker& b, const std::string& pool, int n) {
    std::vector<double> out;
    for (int i = 0; i < n; ++i) {
        b.wait_for([&](const lease::Snapshot& s) { return BenchBroker::workers(s, pool) == 0; },
                   "no worker in pool " + pool);
        auto t0 = Clock::now();
        auto t = b.ask(pool);
        Grant g = b.client().wait(t);
        out.push_back(micros(g.at - t0));
        b.release(g);
        g.conn.reset();
    }
    return out;
}

struct Breakdown {
    std::vector<double> to_started; ///< LEASE → the broker knows the pid (fork+exec done)
    std::vector<double> to_grant;   ///< that → the grant (readiness + handoff connect)
};

/// As cold_leases, with the time split at the worker's start.
Breakdown cold_breakdown(BenchBroker& b, const std::string& pool, int n) {
    Breakdown out;
    for (int i = 0; i < n; ++i) {
        b.wait_for([&](const lease::Snapshot& s) { return BenchBroker::workers(s, pool) == 0; },
                   "no worker in pool " + pool);
        b.watch_pool(pool);
        auto t0 = Clock::now();
        auto t = b.ask(pool);
        Grant g = b.client().wait(t);
        auto started = b.started_at();
        if (!started) die("the worker's start was not observed");
        // Seen after the grant: the pid and the readiness came in one event.
        auto known = std::min(*started, g.at);
        out.to_started.push_back(micros(known - t0));
        out.to_grant.push_back(micros(g.at - known));
        b.release(g);
        g.conn.reset();
    }
    return out;
}

/// `n` leases served by an idle worker (min_idle=1, no max_requests; while
/// one is leased, min_idle starts another, so there may be two).
std::vector<double> warm_leases(BenchBroker& b, const std::string& pool, int n) {
    std::vector<double> out;
    for (int i = 0; i < n; ++i) {
        b.wait_for([&](const lease::Snapshot& s) { return BenchBroker::idle(s, pool) >= 1; },
                   "an idle worker in pool " + pool);
        auto t0 = Clock::now();
        auto t = b.ask(pool);
        Grant g = b.client().wait(t);
        out.push_back(micros(g.at - t0));
        g.conn.reset(); // notify=foreman: the worker's READY=1 ends the lease
        b.release(g);   // notify=none: this does
    }
    return out;
}

/// Grants per second with `concurrency` LEASEs always outstanding, each
/// worker serving one lease (so each grant is a spawn).
double spawns_per_second(BenchBroker& b, const std::string& pool, int concurrency, std::chrono::milliseconds span) {
    for (int i = 0; i < concurrency; ++i) b.ask(pool);
    auto start = Clock::now();
    auto end = start + span;
    std::size_t grants = 0;
    Clock::time_point last = start;
    while (Clock::now() < end) {
        auto got = b.client().next(end);
        if (!got) break;
        ++grants;
        last = got->second.at;
        b.release(got->second);
        got->second.conn.reset();
        b.ask(pool);
    }
    // Drain what is still outstanding, so the broker stops with no lease.
    for (int i = 0; i < concurrency; ++i) {
        auto got = b.client().next(Clock::now() + 30s);
        if (!got) die("an outstanding lease was never granted");
        b.release(got->second);
    }
    return static_cast<double>(grants) / std::chrono::duration<double>(last - start).count();
}

void print_header() {
    std::printf("%-38s %5s %7s %7s %7s %7s %6s %6s %6s %6s\n", "mode", "n", "median", "p90", "p99", "max", "x med",
                "x p99", "x*med", "x*p99");
}

/// Ratios against `base` (the spin row) and `best` (the fastest raw row).
void print_row(const std::string& mode, const Stats& s, const Stats* base, const Stats* best = nullptr) {
    std::printf("%-38s %5zu %7.0f %7.0f %7.0f %7.0f", mode.c_str(), s.n, s.median, s.p90, s.p99, s.max);
    if (base) std::printf(" %6.2f %6.2f", s.median / base->median, s.p99 / base->p99);
    if (best) std::printf(" %6.2f %6.2f", s.median / best->median, s.p99 / best->p99);
    std::printf("\n");
}

} // namespace

std::string loadavg() {
    std::ifstream f("/proc/loadavg");
    std::string a, b, c;
    f >> a >> b >> c;
    return a + " " + b + " " + c;
}

int main(int argc, char** argv) {
    int n = 200;
    int concurrency = 4;
    double seconds = 3;
    bool log = false;
    bool breakdown = false;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "--quick") {
            n = 20;
            seconds = 0.5;
        } else if (a == "--n" && i + 1 < argc) {
            n = std::atoi(argv[++i]);
        } else if (a == "--seconds" && i + 1 < argc) {
            seconds = std::atof(argv[++i]);
        } else if (a == "--concurrency" && i + 1 < argc) {
            concurrency = std::atoi(argv[++i]);
        } else if (a == "--breakdown") {
            breakdown = true;
        } else if (a == "--log") {
            log = true;
        } else {
            std::fprintf(stderr,
                         "usage: spawn_bench [--quick] [--n N] [--seconds S] [--concurrency C] [--breakdown] [--log]\n");
            return 2;
        }
    }
    if (n < 1 || concurrency < 1 || seconds <= 0) die("bad arguments");
    // The broker's info lines (two per spawn) would interleave with the table.
    if (!log) broker::set_log_level(broker::LogLevel::warning);
    std::signal(SIGPIPE, SIG_IGN);

    char tmpl[] = "/tmp/spawn-bench-XXXXXX";
    if (!::mkdtemp(tmpl)) die("mkdtemp: " + std::string(std::strerror(errno)));
    const std::string dir = tmpl;

    std::printf("spawn_bench: %s, %d spawns per mode, %u cores, load average %s; latencies in us,\n"
                "from LEASE (raw: fork) to grant (raw: connect); x med, x p99: against the spin row,\n"
                "x*med, x*p99: against the fastest raw row\n\n",
                echo_bin.c_str(), n, std::thread::hardware_concurrency(), loadavg().c_str());

    // Interleaved in blocks, so that a slow phase of the machine hits every
    // mode alike rather than one of them.
    std::vector<double> raw, raw_yield, raw_poll, raw_backoff, path_none, act_foreman, warm_path, warm_act;
    {
        BenchBroker b(dir, pool_ini("path", "path", "none", cold_keys) +
                               pool_ini("act", "activation", "foreman", cold_keys) +
                               pool_ini("warmpath", "path", "none", "min_idle = 1\n") +
                               pool_ini("warmact", "activation", "foreman", "min_idle = 1\n"));
        const int block = std::min(n, 20);
        for (int done = 0; done < n; done += block) {
            int k = std::min(block, n - done);
            for (int i = 0; i < k; ++i) raw.push_back(raw_spawn(dir + "/raw.sock", RawWait::spin));
            for (int i = 0; i < k; ++i) raw_yield.push_back(raw_spawn(dir + "/raw.sock", RawWait::yield));
            for (int i = 0; i < k; ++i) raw_poll.push_back(raw_spawn(dir + "/raw.sock", RawWait::poll_50us));
            for (int i = 0; i < k; ++i) raw_backoff.push_back(raw_spawn(dir + "/raw.sock", RawWait::probe_backoff));
            auto p = cold_leases(b, "path", k);
            path_none.insert(path_none.end(), p.begin(), p.end());
            auto a = cold_leases(b, "act", k);
            act_foreman.insert(act_foreman.end(), a.begin(), a.end());
            auto wp = warm_leases(b, "warmpath", k);
            warm_path.insert(warm_path.end(), wp.begin(), wp.end());
            auto wa = warm_leases(b, "warmact", k);
            warm_act.insert(warm_act.end(), wa.begin(), wa.end());
        }
    }
    // The spin row is the baseline the issue names; on 2 cores the spinning
    // parent competes with the child it waits for (fork places the child on
    // the parent's core), so the fastest raw row is the fair one: "best".
    Stats base = stats_of(raw);
    std::vector<std::pair<std::string, Stats>> raws = {
        {"raw fork+exec+connect (spin)", base},
        {"raw, connect + sched_yield", stats_of(raw_yield)},
        {"raw, connect every 50 us", stats_of(raw_poll)},
        {"raw, connect on probe back-off", stats_of(raw_backoff)},
    };
    const Stats* best = &raws[0].second;
    for (auto& [name, st] : raws)
        if (st.median < best->median) best = &st;
    std::string best_name;
    for (auto& [name, st] : raws)
        if (&st == best) best_name = name;
    print_header();
    for (auto& [name, st] : raws) print_row(name, st, &base, best);
    print_row("foreman cold, listen=path/none", stats_of(path_none), &base, best);
    print_row("foreman cold, activation/foreman", stats_of(act_foreman), &base, best);
    print_row("grant-only (idle), path/none", stats_of(warm_path), nullptr, nullptr);
    print_row("grant-only (idle), activation/foreman", stats_of(warm_act), nullptr, nullptr);
    std::printf("best raw (x* columns): %s\n", best_name.c_str());

    if (breakdown) {
        BenchBroker b(dir, pool_ini("path", "path", "none", cold_keys) +
                               pool_ini("act", "activation", "foreman", cold_keys));
        std::printf("\nbreakdown (a pass of its own: a snapshot after every event):\n");
        for (const char* pool : {"path", "act"}) {
            auto d = cold_breakdown(b, pool, n);
            print_row(std::string(pool) + ": LEASE -> pid known", stats_of(d.to_started), nullptr);
            print_row(std::string(pool) + ": pid known -> grant", stats_of(d.to_grant), nullptr);
        }
    }

    auto span = std::chrono::milliseconds(static_cast<long>(seconds * 1000));
    std::printf("\nspawns/s: %d LEASEs outstanding, max_requests=1, max_instances=2, %.1f s each\n", concurrency,
                seconds);
    for (auto [name, listen, notify] : {std::tuple{"path", "path", "none"},
                                        std::tuple{"act", "activation", "foreman"}}) {
        BenchBroker b(dir, pool_ini(name, listen, notify,
                                    "max_requests = 1\nrecycle_jitter_pct = 0\nmax_instances = 2\n"));
        double rate = spawns_per_second(b, name, concurrency, span);
        std::printf("  listen=%-10s notify=%-8s %8.0f spawns/s\n", listen, notify, rate);
    }
    std::printf("load average at the end: %s\n", loadavg().c_str());
    std::filesystem::remove_all(dir);
    return 0;
}
