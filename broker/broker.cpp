#include "broker/broker.hpp"

#include "broker/control_server.hpp"
#include "broker/log.hpp"
#include "broker/metrics.hpp"
#include "broker/metrics_server.hpp"
#include "broker/notify_socket.hpp"
#include "broker/readiness_probe.hpp"
#include "broker/run_as.hpp"
#include "broker/signal_reader.hpp"
#include "broker/unix_socket.hpp"
#include "broker/worker_launch.hpp"
#include "broker/worker_output.hpp"
#include "spawn/process_supervisor.hpp"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/unordered/unordered_flat_map.hpp>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <fcntl.h>
#include <map>
#include <mutex>
#include <thread>
#include <unistd.h>
#include <unordered_map>
#include <unordered_set>
#include <variant>

extern char** environ;

namespace foreman::broker {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using lease::Clock;
using lease::TimePoint;
using protocol::FailCode;

namespace {

/// Backlog of a worker's activation socket: the broker makes at most one
/// connection per lease, so a few suffice; more hides a hung worker longer.
constexpr int worker_backlog = 16;

/// How long a grant waits for room in a worker's full backlog before the
/// worker counts as hung and is retired...
constexpr std::chrono::milliseconds connect_patience = 250ms;
/// ...trying again after 1 ms, doubling up to this.
constexpr std::chrono::milliseconds connect_retry_max = 32ms;

/// A notify datagram from a pid the engine does not know yet is kept this
/// long (a worker can say READY=1 before its start is reported)...
constexpr std::chrono::milliseconds early_notify_keep = 2000ms;
/// ...for at most this many pids, so strangers cannot fill memory.
constexpr std::size_t early_notify_max = 256;

/// Whether two pool configs start their workers differently (then the
/// workers of the old config are replaced).
bool launch_differs(const PoolConfig& a, const PoolConfig& b) {
    return a.path != b.path || a.args != b.args || a.listen != b.listen || a.run_as != b.run_as ||
           a.allow_root != b.allow_root || a.limits.notify != b.limits.notify ||
           a.limits.heartbeat_timeout != b.limits.heartbeat_timeout || a.limits.version != b.limits.version;
}

/// Errors of a connect() that are the broker's shortage, not the worker's fault.
bool broker_short_of_resources(const std::error_code& ec) {
    return ec == std::errc::too_many_files_open || ec == std::errc::too_many_files_open_in_system ||
           ec == std::errc::no_buffer_space || ec == std::errc::not_enough_memory;
}

} // namespace

/// A worker's runtime side: what the engine does not know.
struct WorkerRuntime {
    PoolConfig pool; ///< the config it was started with
    std::string socket_path;
    std::string user;
    int pid = 0;
    spawn::unique_fd output_read; ///< until the pid is known
    std::shared_ptr<WorkerOutput> output;
    std::shared_ptr<ReadinessProbe> probe;
    int signal_sent = 0; ///< the strongest signal decided for it: 0, SIGTERM, SIGKILL (its exit's cause)
};

// ---- actions: decisions made self-contained under the lock -------------------

struct SpawnAction {
    lease::WorkerId worker;
    PoolConfig pool;
    WorkerPlacement where;
};
struct GrantAction {
    lease::Grant grant;
    std::string socket_path;
    std::shared_ptr<ClientEvents> client;
};
struct RejectAction {
    lease::Reject reject;
    std::shared_ptr<ClientEvents> client;
};
struct SignalAction {
    lease::WorkerId worker;
    int signal;
};
struct ExpireAction {
    lease::Expire expire;
    std::shared_ptr<ClientEvents> client;
};
using Action = std::variant<SpawnAction, GrantAction, RejectAction, SignalAction, ExpireAction>;
using Actions = std::vector<Action>;

struct Broker::Impl {
    Broker& self;
    asio::io_context& io;
    asio::executor_work_guard<asio::io_context::executor_type> work;
    const std::vector<std::string> inherited_env = inheritable_environment(environ);
    std::string config_file;
    std::vector<std::string> overrides;

    std::mutex mu; // guards everything below up to the next comment
    lease::Engine engine;
    std::unordered_map<std::string, PoolConfig> pools;
    /// Pools that came by REGISTER: a reload of the file leaves them alone.
    std::unordered_set<std::string> registered;
    std::unordered_map<lease::WorkerId, WorkerRuntime> workers;
    struct Client {
        std::weak_ptr<ClientEvents> events;
    };
    std::unordered_map<lease::ClientId, Client> clients;
    lease::ClientId next_client = 1;
    /// Datagrams from pids not known yet: a worker may say READY=1 before
    /// the supervisor has reported its pid. Replayed when it is; bounded.
    struct Early {
        protocol::NotifyMessage message;
        TimePoint received;
    };
    std::unordered_map<pid_t, Early> early;
    asio::steady_timer timer;
    std::optional<TimePoint> armed;
    bool stopping = false;
    bool ended_all = false;
    bool finished = false;
    asio::steady_timer grace_timer;

    /// The metrics counted as decisions are carried out (docs/metrics.md).
    struct PoolMetrics {
        metrics::PoolCounters counters;
        std::size_t unanswered = 0; ///< entries of `unanswered` pointing here: it stays while any do
    };
    /// By pool name; a pool's entry goes once the engine forgot the pool.
    std::unordered_map<std::string, PoolMetrics> pool_metrics;
    PoolMetrics unknown_pool_metrics; ///< LEASEs naming no pool
    /// A LEASE not answered yet: when it arrived (for the wait histogram).
    struct Unanswered {
        PoolMetrics* pool;
        TimePoint received;
        lease::ClientId client;
    };
    boost::unordered_flat_map<lease::Ticket, Unanswered> unanswered;
    const double start_time =
        std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();

    std::function<void()> observer; ///< set in the constructor, then only read
    std::function<void(Lifecycle, const std::string&)> lifecycle; ///< likewise

    // Thread-safe on their own.
    std::unique_ptr<ControlServer> control;
    std::optional<SignalReader> signals;
    std::unique_ptr<NotifySocket> notify;
    std::unique_ptr<spawn::ProcessSupervisor> supervisor;
    std::unique_ptr<MetricsServer> metrics_server; ///< on `io`; null when metrics_listen is empty

    Impl(Broker& b, std::string file, std::vector<std::string> ov)
        : self(b), io(b.io_), work(b.io_.get_executor()), config_file(std::move(file)),
          overrides(std::move(ov)),
          engine(lease::EngineOptions{b.config_.global.max_workers, static_cast<std::uint64_t>(::getpid())}),
          timer(b.io_), grace_timer(b.io_) {}

    const GlobalConfig& global() const { return self.config_.global; }
    std::string notify_path() const { return global().runtime_dir + "/notify.sock"; }
    std::string pool_dir(const std::string& protocol) const { return global().runtime_dir + "/" + protocol; }

    // ---- the one way into the engine ---------------------------------------

    /// Runs `f(now, decisions)` under the lock, turns the decisions into
    /// actions, re-arms the deadline timer, and carries the actions out.
    template <class F>
    auto act(F&& f) {
        Actions actions;
        using R = decltype(f(TimePoint{}, std::declval<lease::Decisions&>()));
        if constexpr (std::is_void_v<R>) {
            {
                std::lock_guard lock(mu);
                lease::Decisions out;
                TimePoint now = Clock::now();
                f(now, out);
                prepare(out, actions, now);
                after_event();
            }
            carry_out(actions);
            if (observer) observer();
        } else {
            std::optional<R> result;
            {
                std::lock_guard lock(mu);
                lease::Decisions out;
                TimePoint now = Clock::now();
                result.emplace(f(now, out));
                prepare(out, actions, now);
                after_event();
            }
            carry_out(actions);
            if (observer) observer();
            return std::move(*result);
        }
    }

    std::shared_ptr<ClientEvents> client_events(lease::ClientId id) {
        auto it = clients.find(id);
        return it == clients.end() ? nullptr : it->second.events.lock();
    }

    /// Under the lock: the LEASE `ticket` is answered; its entry goes.
    std::optional<Unanswered> answered(lease::Ticket ticket) {
        auto it = unanswered.find(ticket);
        if (it == unanswered.end()) return std::nullopt; // cannot happen: every LEASE comes through lease()
        Unanswered u = it->second;
        unanswered.erase(it);
        --u.pool->unanswered;
        return u;
    }

    /// Under the lock: the LEASEs of a closed connection, dropped unanswered.
    void forget_unanswered(lease::ClientId client) {
        if (unanswered.empty()) return;
        boost::unordered::erase_if(unanswered, [&](const auto& entry) {
            if (entry.second.client != client) return false;
            --entry.second.pool->unanswered;
            return true;
        });
    }

    /// Under the lock: the signal decided for a worker, for its exit's cause.
    void note_signal(lease::WorkerId worker, int signal) {
        auto it = workers.find(worker);
        if (it != workers.end() && it->second.signal_sent != SIGKILL) it->second.signal_sent = signal;
    }

    /// Under the lock: decisions → actions carrying every datum they need,
    /// counted for the metrics on the way.
    void prepare(lease::Decisions& out, Actions& actions, TimePoint now) {
        for (auto& d : out) {
            if (auto* s = std::get_if<lease::Spawn>(&d)) {
                auto pool = pools.find(s->protocol);
                if (pool == pools.end()) continue; // cannot happen: only live pools spawn
                ++pool_metrics[s->protocol].counters.spawns;
                WorkerRuntime rt;
                rt.pool = pool->second;
                rt.user = s->user;
                rt.socket_path = pool_dir(s->protocol) + "/" + std::to_string(s->worker) + ".sock";
                WorkerPlacement where{std::to_string(s->worker), rt.socket_path, s->user, notify_path()};
                actions.push_back(SpawnAction{s->worker, rt.pool, where});
                workers.emplace(s->worker, std::move(rt));
            } else if (auto* g = std::get_if<lease::Grant>(&d)) {
                if (auto u = answered(g->ticket)) {
                    ++u->pool->counters.leases_granted;
                    u->pool->counters.lease_wait.observe(now - u->received);
                }
                auto w = workers.find(g->worker);
                std::string path = w == workers.end() ? std::string{} : w->second.socket_path;
                actions.push_back(GrantAction{*g, path, client_events(g->client)});
            } else if (auto* r = std::get_if<lease::Reject>(&d)) {
                if (auto u = answered(r->ticket)) ++u->pool->counters.rejections[static_cast<std::size_t>(r->code)];
                actions.push_back(RejectAction{*r, client_events(r->client)});
            } else if (auto* t = std::get_if<lease::Terminate>(&d)) {
                note_signal(t->worker, SIGTERM);
                actions.push_back(SignalAction{t->worker, SIGTERM});
            } else if (auto* k = std::get_if<lease::Kill>(&d)) {
                note_signal(k->worker, SIGKILL);
                actions.push_back(SignalAction{k->worker, SIGKILL});
            } else if (auto* e = std::get_if<lease::Expire>(&d)) {
                actions.push_back(ExpireAction{*e, client_events(e->client)});
            }
        }
    }

    /// Under the lock, after every event: the timer, and the stop sequence.
    void after_event() {
        if (stopping) {
            if (!ended_all && engine.live_leases() == 0) end_all_locked();
            if (ended_all && engine.workers_total() == 0 && !finished) {
                finished = true;
                asio::post(io, [this] { finish(); });
            }
        }
        auto next = engine.next_deadline();
        if (next && (!armed || *next < *armed)) {
            armed = next;
            timer.expires_at(*next);
            timer.async_wait([this](const boost::system::error_code& ec) {
                if (ec == asio::error::operation_aborted) return; // re-armed earlier
                {
                    std::lock_guard lock(mu);
                    armed.reset();
                }
                act([this](TimePoint now, lease::Decisions& out) { engine.expire(now, out); });
            });
        }
    }

    std::optional<std::string> run_as_denial(const lease::LeaseRequest& request);

    void end_all_locked() {
        ended_all = true;
        grace_timer.cancel();
        lease::Decisions out;
        TimePoint now = Clock::now();
        engine.end_all(now, out);
        Actions actions;
        prepare(out, actions, now);
        // Carried out after the caller releases the lock.
        asio::post(io, [this, actions = std::move(actions)]() mutable { carry_out(actions); });
    }

    // ---- carrying out ------------------------------------------------------

    void carry_out(Actions& actions) {
        for (auto& a : actions) std::visit([this](auto& x) { run(x); }, a);
    }

    void run(SpawnAction& s) {
        spawn::LaunchSpec spec = make_launch_spec(s.pool, s.where, inherited_env);
        spawn::unique_fd listener, out_read, out_write;
        try {
            if (s.pool.listen == ListenMode::activation) listener = listen_unix(s.where.socket_path, worker_backlog);
            else ::unlink(s.where.socket_path.c_str()); // a stale socket of an earlier worker
            int p[2];
            if (::pipe2(p, O_CLOEXEC) < 0) throw std::system_error(errno, std::system_category(), "pipe");
            out_read.reset(p[0]);
            out_write.reset(p[1]);
            if (!s.pool.run_as.empty()) {
                std::string user = s.pool.run_as == "{user}" ? s.where.user : s.pool.run_as;
                spec.credentials = resolve_run_as(user, s.pool.allow_root);
                spec.has_credentials = true;
            }
        } catch (const std::exception& e) {
            spawn_failed(s.worker, e.what());
            return;
        }
        spec.activation_fd = listener.release(); // the supervisor closes them after the start
        spec.output_fd = out_write.release();
        {
            std::lock_guard lock(mu);
            auto it = workers.find(s.worker);
            if (it != workers.end()) it->second.output_read = std::move(out_read);
        }
        supervisor->start(s.worker, std::move(spec), [this, path = s.pool.path](auto tag, int pid, std::error_code ec) {
            if (ec) spawn_failed(tag, "exec " + path + ": " + ec.message());
            else started(tag, pid);
        });
    }

    void spawn_failed(lease::WorkerId worker, const std::string& error) {
        log_warning("spawn of worker " + std::to_string(worker) + " failed: " + error);
        act([&](TimePoint now, lease::Decisions& out) {
            forget_worker(worker);
            engine.spawn_failed(now, worker, error, out);
        });
    }

    void started(lease::WorkerId worker, int pid) {
        act([&](TimePoint now, lease::Decisions& out) {
            auto it = workers.find(worker);
            if (it == workers.end()) return;
            WorkerRuntime& rt = it->second;
            rt.pid = pid;
            log_info(rt.pool.name + "[" + std::to_string(pid) + "]: started worker " + std::to_string(worker));
            if (rt.output_read) rt.output = WorkerOutput::start(io, std::move(rt.output_read), rt.pool.name, pid);
            engine.worker_started(now, worker, pid, out);
            if (auto e = early.find(pid); e != early.end()) {
                apply_notify(now, worker, e->second.message, out);
                early.erase(e);
            }
            if (rt.pool.limits.notify != lease::NotifyMode::none) return;
            if (rt.pool.listen == ListenMode::activation) {
                // The broker's own socket listens already: connect() would
                // succeed before the worker even runs, so it is ready now.
                engine.worker_ready(now, worker, out);
                return;
            }
            rt.probe = ReadinessProbe::start(io, rt.socket_path, now + rt.pool.limits.start_timeout,
                                             [this, worker](bool ready) {
                                                 if (!ready) return; // the engine's start timeout acts
                                                 act([&](TimePoint t, lease::Decisions& o) {
                                                     engine.worker_ready(t, worker, o);
                                                 });
                                             });
        });
    }

    /// Under the lock: the runtime side of a worker that is gone.
    void forget_worker(lease::WorkerId worker) {
        auto it = workers.find(worker);
        if (it == workers.end()) return;
        if (it->second.probe) it->second.probe->cancel();
        ::unlink(it->second.socket_path.c_str());
        workers.erase(it);
    }

    void exited(lease::WorkerId worker, int pid, int status) {
        act([&](TimePoint now, lease::Decisions& out) {
            auto it = workers.find(worker);
            std::string name = it == workers.end() ? std::string("worker") : it->second.pool.name;
            log_info(name + "[" + std::to_string(pid) + "]: " + spawn::describe_wait_status(status));
            if (it != workers.end()) {
                auto cause = metrics::exit_cause(status, it->second.signal_sent);
                ++pool_metrics[name].counters.exits[static_cast<std::size_t>(cause)];
            }
            forget_worker(worker);
            engine.worker_exited(now, worker, out);
        });
    }

    void run(GrantAction& g) { connect_worker(std::move(g), 1ms, Clock::now() + connect_patience); }

    /// Connects to the granted worker and hands the connection over. A full
    /// backlog (EAGAIN: connect never blocks) is tried again, 1 ms doubling,
    /// until `give_up`: a worker a burst of leases got ahead of is busy, not
    /// hung (a tight lease-release loop fills 16 slots in ~0.3 ms).
    void connect_worker(GrantAction g, std::chrono::milliseconds delay, TimePoint give_up) {
        std::error_code ec;
        spawn::unique_fd conn = connect_unix(g.socket_path, ec);
        if (conn) {
            if (g.client) g.client->granted(g.grant.ticket, g.grant.lease, g.grant.pid, g.grant.ttl, std::move(conn));
            return;
        }
        if (ec == std::errc::resource_unavailable_try_again && Clock::now() < give_up) {
            auto timer = std::make_shared<asio::steady_timer>(io, delay);
            timer->async_wait([this, timer, g = std::move(g), delay, give_up](const boost::system::error_code& e) mutable {
                if (e) { // the broker is going away
                    if (g.client) g.client->rejected(g.grant.ticket, FailCode::shutting_down, "the broker is stopping");
                    return;
                }
                connect_worker(std::move(g), std::min(delay * 2, connect_retry_max), give_up);
            });
            return;
        }
        if (broker_short_of_resources(ec)) {
            // The broker has no descriptor (or memory) to spare: the worker is
            // fine. End the lease, keep the worker, and say so.
            std::string text = "no descriptor free to connect to worker " + std::to_string(g.grant.worker) + ": " +
                               ec.message();
            log_warning(text);
            act([&](TimePoint now, lease::Decisions& out) {
                engine.release(now, g.grant.lease, g.grant.client, 0, out);
            });
            if (g.client) g.client->rejected(g.grant.ticket, FailCode::overloaded, text);
            return;
        }
        // The worker does not accept (its socket is closed, or its backlog
        // is full: it stopped accepting): it is broken. End the lease, retire
        // the worker, and tell the client why.
        std::string text = "worker " + std::to_string(g.grant.worker) + " refused the connection: " + ec.message();
        if (ec == std::errc::resource_unavailable_try_again)
            text += " (its backlog stayed full for " + std::to_string(connect_patience.count()) + " ms)";
        log_warning(text);
        act([&](TimePoint now, lease::Decisions& out) {
            if (auto w = workers.find(g.grant.worker); w != workers.end()) {
                auto& rejections = pool_metrics[w->second.pool.name].counters.rejections;
                ++rejections[static_cast<std::size_t>(FailCode::spawn_failed)];
            }
            engine.worker_stopping(now, g.grant.worker, out);
            engine.release(now, g.grant.lease, g.grant.client, 0, out);
        });
        if (g.client) g.client->rejected(g.grant.ticket, FailCode::spawn_failed, text);
    }

    void run(RejectAction& r) {
        if (r.client) r.client->rejected(r.reject.ticket, r.reject.code, r.reject.text);
    }

    void run(SignalAction& s) {
        supervisor->signal_group(s.worker, s.signal);
        // As systemd does: a stopped worker (SIGSTOP, a debugger) sees SIGTERM
        // only once continued; without this it always waits out kill_grace.
        if (s.signal == SIGTERM) supervisor->signal_group(s.worker, SIGCONT);
    }

    void run(ExpireAction& e) {
        if (e.client) e.client->expired(e.expire.lease, e.expire.reason);
    }

    // ---- notify datagrams ----------------------------------------------------

    /// One wake-up's datagrams, under one lock.
    void notified(const std::vector<NotifySocket::Datagram>& batch) {
        act([&](TimePoint now, lease::Decisions& out) {
            for (const auto& d : batch) {
                if (auto worker = engine.worker_by_pid(d.pid)) apply_notify(now, *worker, d.message, out);
                else remember_early(now, d.pid, d.message);
            }
        });
    }

    void apply_notify(TimePoint now, lease::WorkerId worker, const protocol::NotifyMessage& m,
                      lease::Decisions& out) {
        if (m.status) engine.worker_status(worker, *m.status);
        if (m.ready) engine.worker_ready(now, worker, out);
        if (m.watchdog) engine.worker_heartbeat(now, worker, out);
        if (m.stopping) engine.worker_stopping(now, worker, out);
    }

    /// Under the lock: keeps a datagram of an unknown pid for a while, in
    /// case it is a worker whose start is not reported yet.
    void remember_early(TimePoint now, pid_t pid, const protocol::NotifyMessage& m) {
        for (auto it = early.begin(); it != early.end();)
            it = now - it->second.received > early_notify_keep ? early.erase(it) : std::next(it);
        bool debug = log_level() <= LogLevel::debug;
        if (early.size() >= early_notify_max && !early.count(pid)) {
            if (debug) log_debug("notify datagram from pid " + std::to_string(pid) + ", not a worker: ignored");
            return;
        }
        if (debug)
            log_debug("notify datagram from pid " + std::to_string(pid) + ", not a worker (yet): kept for " +
                      std::to_string(early_notify_keep.count()) + " ms");
        Early& e = early[pid];
        e.received = now;
        e.message.ready = e.message.ready || m.ready;
        e.message.watchdog = e.message.watchdog || m.watchdog;
        e.message.stopping = e.message.stopping || m.stopping;
        if (m.status) e.message.status = m.status;
    }

    // ---- pools -----------------------------------------------------------------

    PoolResult add_pool_locked(const PoolConfig& pool, TimePoint now, lease::Decisions& out, std::string& error) {
        if (pools.count(pool.name)) return PoolResult::exists;
        try {
            make_directories(pool_dir(pool.name), 0750);
        } catch (const std::exception& e) {
            error = e.what();
            return PoolResult::invalid;
        }
        auto change = engine.add_pool(now, pool.name, pool.limits, out);
        if (change == lease::PoolChange::shutting_down) return PoolResult::shutting_down;
        if (change == lease::PoolChange::exists) return PoolResult::exists;
        pools.emplace(pool.name, pool);
        return PoolResult::ok;
    }

    void apply_config(const Config& next) {
        act([&](TimePoint now, lease::Decisions& out) {
            for (auto it = pools.begin(); it != pools.end();) {
                bool kept = registered.count(it->first) ||
                            std::any_of(next.pools.begin(), next.pools.end(),
                                        [&](const PoolConfig& p) { return p.name == it->first; });
                if (kept) {
                    ++it;
                    continue;
                }
                log_info("pool " + it->first + " removed: it drains");
                engine.remove_pool(now, it->first, out);
                it = pools.erase(it);
            }
            for (const auto& p : next.pools) {
                auto it = pools.find(p.name);
                if (it == pools.end()) {
                    std::string error;
                    if (add_pool_locked(p, now, out, error) == PoolResult::ok) log_info("pool " + p.name + " added");
                    else log_error("pool " + p.name + ": " + error);
                } else {
                    registered.erase(p.name); // the file declares it now: the file's wins
                    if (!(it->second == p)) {
                        bool restart = launch_differs(it->second, p);
                        engine.update_pool(now, p.name, p.limits, restart, out);
                        it->second = p;
                        log_info("pool " + p.name + " changed" + (restart ? ": its workers are replaced" : ""));
                    }
                }
            }
            if (next.global.max_workers != global().max_workers) {
                engine.set_max_workers(now, next.global.max_workers, out);
                self.config_.global.max_workers = next.global.max_workers;
            }
        });
    }

    // ---- metrics -------------------------------------------------------------------

    /// Under the lock: the broker's counters and the engine's view, merged
    /// per pool name. Drops the counters of pools the engine has forgotten.
    metrics::Scrape scrape_locked() {
        metrics::Scrape s;
        lease::Snapshot snap = engine.snapshot(Clock::now());
        std::map<std::string, metrics::PoolSample> by_name; // sorted: a stable exposition
        for (const auto& view : snap.pools) metrics::add_pool_view(by_name[view.protocol], view);
        for (auto it = pool_metrics.begin(); it != pool_metrics.end();) {
            auto sample = by_name.find(it->first);
            if (sample != by_name.end()) sample->second.counters = it->second.counters;
            if (sample == by_name.end() && it->second.unanswered == 0 && !pools.count(it->first))
                it = pool_metrics.erase(it);
            else
                ++it;
        }
        for (auto& [name, sample] : by_name) {
            sample.name = name;
            s.pools.push_back(std::move(sample));
        }
        s.unknown_pool = unknown_pool_metrics.counters;
        s.max_workers = snap.max_workers;
        s.start_time_seconds = start_time;
        return s;
    }

    // ---- stopping ----------------------------------------------------------------

    void tell(Lifecycle step, const std::string& status) {
        if (lifecycle) lifecycle(step, status);
    }

    void begin_stop() {
        std::string status;
        act([&](TimePoint now, lease::Decisions& out) {
            if (stopping) return;
            stopping = true;
            status = "stopping: no new leases; waiting up to " + std::to_string(global().shutdown_grace.count()) +
                     " ms for " + std::to_string(engine.live_leases()) + " leases";
            log_info(status);
            engine.begin_shutdown(now, out);
            grace_timer.expires_after(global().shutdown_grace);
            grace_timer.async_wait([this](const boost::system::error_code& ec) {
                if (ec) return;
                std::lock_guard lock(mu);
                if (!ended_all) end_all_locked();
            });
        });
        if (!status.empty()) tell(Lifecycle::stopping, status);
    }

    void on_signal(int sig) {
        if (sig == SIGHUP) {
            self.reload();
        } else {
            log_info(std::string(sig == SIGTERM ? "SIGTERM" : "SIGINT") + ": stopping");
            self.stop();
        }
    }

    void finish() {
        {
            std::lock_guard lock(mu);
            grace_timer.cancel();
            timer.cancel();
        }
        if (control) control->close();
        if (notify) notify->close();
        if (metrics_server) metrics_server->close();
        log_info("stopped");
        work.reset();
        io.stop();
    }
};

// ---- Broker -----------------------------------------------------------------------

Broker::Broker(Config config, BrokerOptions options)
    : io_(1), config_(std::move(config)),
      impl_(std::make_unique<Impl>(*this, std::move(options.config_file), std::move(options.overrides))) {
    impl_->observer = std::move(options.observer);
    impl_->lifecycle = std::move(options.lifecycle);
    // Signals are caught before any worker starts: a SIGTERM in between must
    // stop the broker cleanly, not kill it by default action.
    if (options.handle_signals)
        impl_->signals.emplace(io_, std::initializer_list<int>{SIGTERM, SIGINT, SIGHUP},
                               [m = impl_.get()](int sig) { m->on_signal(sig); });
    make_directories(config_.global.runtime_dir, 0750);
    // First the control socket: it refuses to start beside a live broker
    // before anything of that broker's (its notify socket) is touched.
    for (unsigned i = 1; i < config_.global.threads; ++i) session_io_.push_back(std::make_unique<asio::io_context>(1));
    impl_->control = std::make_unique<ControlServer>(
        *this, io_,
        [this, next = std::make_shared<std::atomic<unsigned>>(0)]() -> asio::io_context& {
            // Round robin over every context, the broker's own included.
            unsigned i = next->fetch_add(1) % static_cast<unsigned>(session_io_.size() + 1);
            return i == 0 ? io_ : *session_io_[i - 1];
        },
        config_.global, std::move(options.control_listener));
    // Before any worker starts: a metrics address that cannot be bound stops the start.
    if (!config_.global.metrics_listen.empty())
        impl_->metrics_server = std::make_unique<MetricsServer>(io_, config_.global.metrics_listen,
                                                                [this] { return metrics_text(); });
    impl_->supervisor = std::make_unique<spawn::ProcessSupervisor>(
        [m = impl_.get()](auto tag, int pid, int status) { m->exited(tag, pid, status); });
    impl_->notify = std::make_unique<NotifySocket>(
        impl_->notify_path(), [m = impl_.get()](const std::vector<NotifySocket::Datagram>& batch) { m->notified(batch); });
    // The pools exist from here on; their min_idle workers start now and are
    // watched once run() runs the io_context.
    impl_->act([&](TimePoint now, lease::Decisions& out) {
        for (const auto& pool : config_.pools) {
            std::string error;
            if (impl_->add_pool_locked(pool, now, out, error) != PoolResult::ok)
                throw std::runtime_error("pool " + pool.name + ": " + error);
        }
    });
}

Broker::~Broker() {
    // Workers still running die with the supervisor (SIGKILL to their groups).
    impl_->supervisor.reset();
    if (impl_->notify) impl_->notify->close();
    std::lock_guard lock(impl_->mu);
    for (auto& [id, rt] : impl_->workers) ::unlink(rt.socket_path.c_str());
}

void Broker::run() {
    auto& m = *impl_;
    m.control->start();
    log_info("listening on " + config_.global.control_socket);
    if (m.metrics_server) {
        m.metrics_server->start();
        log_info("serving metrics on http://" + metrics_address() + "/metrics");
    }
    std::vector<std::thread> threads;
    std::vector<asio::executor_work_guard<asio::io_context::executor_type>> keep;
    for (auto& ctx : session_io_) {
        keep.emplace_back(ctx->get_executor()); // idle until finish() stops them
        threads.emplace_back([&ctx = *ctx] { ctx.run(); });
    }
    // READY=1 once every thread runs.
    m.tell(Lifecycle::serving, "serving " + std::to_string(config_.pools.size()) + " pools on " +
                                   config_.global.control_socket);
    io_.run();
    // io_ stopped (finish()): the connections' contexts stop with it.
    for (auto& ctx : session_io_) ctx->stop();
    for (auto& t : threads) t.join();
    if (impl_->signals) impl_->signals->close();
    // Every worker is reaped (the stop sequence waited for it); remove what is ours.
    std::lock_guard lock(m.mu);
    for (auto& [name, pool] : m.pools) ::rmdir(m.pool_dir(name).c_str());
}

void Broker::stop() {
    asio::post(io_, [m = impl_.get()] { m->begin_stop(); });
}

void Broker::reload() {
    auto& m = *impl_;
    if (m.config_file.empty()) {
        log_warning("SIGHUP: no config file to reload");
        return;
    }
    m.tell(Lifecycle::reloading, "reloading " + m.config_file);
    std::string status;
    try {
        Config next = load_config(m.config_file, m.overrides);
        GlobalConfig unchanged = next.global;
        unchanged.max_workers = config_.global.max_workers; // the one global key applied at once
        if (!(unchanged == config_.global))
            log_warning("SIGHUP: global keys other than max_workers take effect on restart only");
        m.apply_config(next);
        status = "SIGHUP: reloaded " + m.config_file;
        log_info(status);
    } catch (const std::exception& e) { // ConfigError, or a failure to apply it
        status = "SIGHUP: " + std::string(e.what()) + "; the old configuration stays in force";
        log_error(status);
    }
    m.tell(Lifecycle::reloaded, status);
}

lease::ClientId Broker::open_client(std::weak_ptr<ClientEvents> events) {
    std::lock_guard lock(impl_->mu);
    lease::ClientId id = impl_->next_client++;
    impl_->clients.emplace(id, Impl::Client{std::move(events)});
    return id;
}

void Broker::close_client(lease::ClientId client) {
    impl_->act([&](TimePoint now, lease::Decisions& out) {
        impl_->forget_unanswered(client); // the engine drops its waiting LEASEs unanswered
        impl_->engine.client_closed(now, client, out);
        impl_->clients.erase(client);
    });
}

/// For a pool that runs workers as the leasing user (run_as={user}): why
/// `request` may not have one. Taken on trust, user= would let any peer have
/// a worker run as any user and hold its connection: only root, the
/// broker's uid, a uid the pool's allow_users lists (the operator named it:
/// a mail server's front end) or the user itself may name a user. And the
/// user must exist, and be root only with allow_root. Asked before the
/// engine sees the LEASE, so that it fails this LEASE alone (`denied`)
/// instead of counting as a failed start that backs the whole pool off; and
/// outside the lock, since the user database may be slow.
std::optional<std::string> Broker::Impl::run_as_denial(const lease::LeaseRequest& request) {
    bool allow_root = false;
    bool trusted = request.uid == 0 || request.uid == ::geteuid();
    {
        std::lock_guard lock(mu);
        auto it = pools.find(request.protocol);
        if (it == pools.end() || it->second.run_as != "{user}" || request.user.empty()) return std::nullopt;
        allow_root = it->second.allow_root;
        const auto& listed = it->second.allow_uids;
        trusted = trusted || std::find(listed.begin(), listed.end(), request.uid) != listed.end();
    }
    std::string why;
    std::optional<uid_t> uid;
    try {
        uid = resolve_run_as(request.user, allow_root).uid;
    } catch (const std::exception& e) {
        why = e.what();
        if (why.rfind("run_as: ", 0) == 0) why.erase(0, 8);
    }
    if (!trusted && uid != request.uid)
        return "uid " + std::to_string(request.uid) + " may not lease for user " + request.user + ": pool " +
               request.protocol + " runs its workers as the leasing user (run_as = {user}); only root, the "
               "broker's uid, a uid in allow_users or the user itself may";
    if (!why.empty()) return "pool " + request.protocol + " runs workers as the leasing user: " + why;
    return std::nullopt;
}

void Broker::lease(const lease::LeaseRequest& request) {
    TimePoint received = Clock::now(); // before the lock: waiting for it is part of the lease's wait
    const std::optional<std::string> denial = impl_->run_as_denial(request);
    impl_->act([&](TimePoint now, lease::Decisions& out) {
        if (denial) {
            out.push_back(lease::Reject{request.ticket, request.client, FailCode::denied, *denial});
            return;
        }
        auto pool = impl_->pools.find(request.protocol);
        // Only pools that exist get a series: a client cannot create them at will.
        Impl::PoolMetrics& m = pool == impl_->pools.end() ? impl_->unknown_pool_metrics
                                                          : impl_->pool_metrics[request.protocol];
        // Tickets are unique while in flight (ControlServer::next_ticket), so this inserts.
        if (impl_->unanswered.try_emplace(request.ticket, Impl::Unanswered{&m, received, request.client}).second)
            ++m.unanswered;
        if (pool != impl_->pools.end() && !pool->second.allow_uids.empty() &&
            std::find(pool->second.allow_uids.begin(), pool->second.allow_uids.end(), request.uid) ==
                pool->second.allow_uids.end()) {
            out.push_back(lease::Reject{request.ticket, request.client, FailCode::denied,
                                        "uid " + std::to_string(request.uid) + " may not lease from pool " +
                                            request.protocol + " (allow_users)"});
            return;
        }
        impl_->engine.request_lease(now, request, out);
    });
}

std::optional<std::chrono::milliseconds> Broker::renew(lease::LeaseId lease, lease::ClientId client,
                                                       lease::Uid uid) {
    return impl_->act([&](TimePoint now, lease::Decisions&) { return impl_->engine.renew(now, lease, client, uid); });
}

bool Broker::release(lease::LeaseId lease, lease::ClientId client, lease::Uid uid) {
    return impl_->act(
        [&](TimePoint now, lease::Decisions& out) { return impl_->engine.release(now, lease, client, uid, out); });
}

std::string Broker::metrics_address() const {
    return impl_->metrics_server ? endpoint_text(impl_->metrics_server->local_endpoint()) : std::string{};
}

std::uint16_t Broker::metrics_port() const {
    return impl_->metrics_server ? impl_->metrics_server->local_endpoint().port() : 0;
}

std::string Broker::metrics_text() {
    metrics::Scrape s;
    {
        std::lock_guard lock(impl_->mu);
        s = impl_->scrape_locked();
    }
    // The control server counts under its own lock, never taken with ours.
    s.control_connections = impl_->control ? impl_->control->connections() : 0;
    return metrics::render(s);
}

lease::Snapshot Broker::snapshot() {
    std::lock_guard lock(impl_->mu);
    return impl_->engine.snapshot(Clock::now());
}

PoolResult Broker::register_pool(PoolConfig pool, std::string& error) {
    return impl_->act([&](TimePoint now, lease::Decisions& out) {
        if (impl_->stopping) return PoolResult::shutting_down;
        auto r = impl_->add_pool_locked(pool, now, out, error);
        if (r == PoolResult::ok) impl_->registered.insert(pool.name);
        return r;
    });
}

PoolResult Broker::unregister_pool(const std::string& protocol) {
    return impl_->act([&](TimePoint now, lease::Decisions& out) {
        if (!impl_->pools.count(protocol)) return PoolResult::unknown;
        impl_->engine.remove_pool(now, protocol, out);
        impl_->pools.erase(protocol);
        impl_->registered.erase(protocol);
        return PoolResult::ok;
    });
}

} // namespace foreman::broker
