#include "lease/engine.hpp"

#include "lease/policies.hpp"
#include "lease/worker_state.hpp"

#include <boost/intrusive/list.hpp>
#include <boost/unordered/unordered_flat_map.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <random>
#include <stdexcept>
#include <unordered_map>
#include <vector>

namespace foreman::lease {
namespace {

namespace bi = boost::intrusive;
using protocol::EndReason;
using protocol::FailCode;
using Hook = bi::list_member_hook<bi::link_mode<bi::auto_unlink>>;

template <class T, Hook T::*H>
using List = bi::list<T, bi::member_hook<T, Hook, H>, bi::constant_time_size<false>>;

struct Pool;
struct Worker;

/// What a granted lease is made of, whether the request waited or not.
struct LeaseTerms {
    Ticket ticket;
    ClientId client;
    Uid uid;
    std::string user;
    Millis ttl;
    bool detach;
};

struct Lease {
    LeaseId id;
    Worker* worker;
    ClientId client; ///< 0 once a detached lease's connection closed
    Uid uid;
    bool detached;
    std::string user;
    Millis ttl;
    TimePoint granted_at;
    Timer ttl_timer{DeadlineKind::lease_ttl, this};
    Timer processtime_timer{DeadlineKind::lease_processtime, this};
    Hook client_hook;
};

struct Worker {
    WorkerId id;
    Pool* pool;
    int pid = 0;
    WorkerState state = WorkerState::starting;
    std::string user; ///< per_user: the one it serves; else the last one served
    std::uint64_t requests = 0;
    std::uint64_t max_requests = 0; ///< drawn with jitter; 0 = unlimited
    TimePoint started_at;
    TimePoint idle_since;             ///< when it last became idle
    bool ever_ready = false;
    bool lifetime_passed = false;
    bool retire_when_free = false;      ///< STOPPING=1, or its pool was changed
    bool terminate_when_started = false;///< retired before its pid was known
    bool start_timed_out = false;       ///< its exit is a failed start
    std::string status;
    Lease* lease = nullptr;
    Timer ready_timer{DeadlineKind::worker_ready, this};
    Timer heartbeat_timer{DeadlineKind::worker_heartbeat, this};
    Timer idle_timer{DeadlineKind::worker_idle, this};
    Timer lifetime_timer{DeadlineKind::worker_lifetime, this};
    Timer kill_timer{DeadlineKind::worker_kill, this};
    Hook pool_hook;      ///< all workers of its pool, in spawn order
    Hook idle_hook;      ///< its pool's idle workers, most recently used first
    Hook user_idle_hook; ///< idle workers by (last) user, most recently used first
};

struct Request {
    LeaseTerms terms;
    Pool* pool;
    Timer wait_timer{DeadlineKind::request_wait, this};
    Millis wait;
    Hook queue_hook;  ///< its pool's queue, oldest first
    Hook user_hook;   ///< its user's waiting requests in the pool, oldest first
    Hook client_hook;
};

using WorkerList = List<Worker, &Worker::pool_hook>;
using IdleList = List<Worker, &Worker::idle_hook>;
using UserIdleList = List<Worker, &Worker::user_idle_hook>;
using RequestQueue = List<Request, &Request::queue_hook>;
using UserQueue = List<Request, &Request::user_hook>;

/// Per user and pool: what max_instances_per_user and max_leases_per_user
/// count, and the user's place in the pool's round of waiting users.
struct UserCount {
    std::uint32_t workers = 0; ///< per_user pools: workers serving the user
    std::uint32_t pending = 0; ///< per_user pools: of those, starting or finishing
    std::uint32_t leases = 0;  ///< live leases the user holds
    std::uint32_t waiting = 0; ///< LEASEs of the user waiting in the queue
    UserQueue queue;           ///< those LEASEs, oldest first
    Hook round_hook;           ///< in its pool's round while it has waiting LEASEs
    bool empty() const { return workers == 0 && pending == 0 && leases == 0 && waiting == 0; }
};
using UserRound = List<UserCount, &UserCount::round_hook>;

struct Pool {
    std::string name;
    PoolLimits limits;
    bool draining = false;
    WorkerList workers;
    IdleList idle;
    std::unordered_map<std::string, UserIdleList> idle_by_user;
    RequestQueue queue;
    /// Users with waiting LEASEs, the next to be served first: a freed worker
    /// goes to the oldest LEASE of the user at the front, who then moves to
    /// the back, so one user with many waiting LEASEs cannot starve the rest
    /// (FIFO within one user, and FIFO overall while users wait one LEASE
    /// each). Declared before `users`, whose entries unlink themselves.
    UserRound round;
    std::unordered_map<std::string, UserCount> users;
    std::size_t total = 0;    ///< every state
    std::size_t pending = 0;  ///< starting + finishing: supply on its way
    std::size_t idle_count = 0;
    std::size_t stopping = 0;
    std::size_t queued = 0;
    std::uint64_t leases_granted = 0;
    std::uint64_t workers_started = 0; ///< Spawn decisions so far
    std::array<std::uint64_t, end_reason_count> leases_ended{}; ///< by EndReason
    std::uint64_t start_failures_total = 0; ///< every record_failure(), never reset
    std::uint32_t failures = 0;
    std::optional<TimePoint> backoff_until;
    Timer backoff_timer{DeadlineKind::pool_backoff, this};
    std::string last_spawn_error;

    bool room() const { return limits.max_instances == 0 || total < limits.max_instances; }
};

struct Client {
    List<Lease, &Lease::client_hook> leases;
    List<Request, &Request::client_hook> requests;
};

std::string ms_text(Millis ms) { return std::to_string(ms.count()) + " ms"; }

} // namespace

struct Engine::Impl {
    EngineOptions options;
    std::mt19937_64 rng;
    // Declared first so that it outlives every Timer (timers unlink themselves).
    DeadlineIndex deadlines;
    std::vector<std::unique_ptr<Pool>> pools; ///< live and draining
    std::unordered_map<std::string, Pool*> by_name; ///< live only
    // Flat (open addressing) maps for what every lease and heartbeat looks
    // up: one probe into one array, where std::unordered_map chased a node
    // per lookup (it was 11 % of the broker's CPU under 10,000 heartbeats/s).
    // Their values are pointers, so what they point to never moves.
    boost::unordered_flat_map<WorkerId, std::unique_ptr<Worker>> workers;
    boost::unordered_flat_map<int, Worker*> by_pid;
    boost::unordered_flat_map<LeaseId, std::unique_ptr<Lease>> leases;
    boost::unordered_flat_map<Ticket, std::unique_ptr<Request>> requests;
    std::unordered_map<ClientId, Client> clients;
    WorkerId next_worker = 1;
    LeaseId next_lease = 1;
    std::size_t total = 0;
    std::size_t stopping_total = 0;
    std::size_t queued_total = 0; ///< waiting LEASEs across pools
    bool shutting_down = false;

    explicit Impl(EngineOptions o) : options(o), rng(o.seed) {}

    // ---- small helpers -------------------------------------------------------

    Pool* find_pool(const std::string& name) {
        auto it = by_name.find(name);
        return it == by_name.end() ? nullptr : it->second;
    }
    Worker* find_worker(WorkerId id) {
        auto it = workers.find(id);
        return it == workers.end() ? nullptr : it->second.get();
    }
    bool global_room() const { return total < options.max_workers; }

    /// `value` drawn uniformly within ± pct percent, at least 1; 0 stays 0.
    std::uint64_t jittered(std::uint64_t value, std::uint32_t pct) {
        if (value == 0 || pct == 0) return value;
        double spread = static_cast<double>(std::min<std::uint32_t>(pct, 100)) / 100.0;
        std::uniform_real_distribution<double> dist(-spread, spread);
        auto drawn = std::llround(static_cast<double>(value) * (1.0 + dist(rng)));
        return static_cast<std::uint64_t>(std::max<long long>(drawn, 1));
    }

    UserCount& user_count(Pool& p, const std::string& user) { return p.users[user]; }
    void drop_if_empty(Pool& p, const std::string& user) {
        auto it = p.users.find(user);
        if (it != p.users.end() && it->second.empty()) p.users.erase(it);
    }

    // ---- the state table, and the counts that follow each state ------------

    /// Applies `event` to `w` through the state table; false if ignored.
    bool apply(Worker& w, WorkerEvent event, TimePoint now) {
        Transition t = transition(w.state, event);
        if (t.effect == Effect::impossible)
            throw std::logic_error("lease engine: worker " + std::to_string(w.id) + " in state " +
                                   std::string(to_string(w.state)) + " got impossible event " +
                                   std::string(to_string(event)));
        if (t.effect == Effect::ignore) return false;
        leave(w);
        w.state = t.next;
        enter(w, now);
        return true;
    }

    void leave(Worker& w) {
        Pool& p = *w.pool;
        switch (w.state) {
        case WorkerState::starting:
        case WorkerState::finishing:
            --p.pending;
            if (p.limits.per_user) --user_count(p, w.user).pending;
            deadlines.disarm(w.ready_timer);
            break;
        case WorkerState::idle: {
            --p.idle_count;
            w.idle_hook.unlink();
            if (w.user_idle_hook.is_linked()) {
                w.user_idle_hook.unlink();
                auto it = p.idle_by_user.find(w.user);
                if (it != p.idle_by_user.end() && it->second.empty()) p.idle_by_user.erase(it);
            }
            deadlines.disarm(w.idle_timer);
            break;
        }
        case WorkerState::leased:
            deadlines.disarm(w.heartbeat_timer);
            break;
        case WorkerState::stopping:
            --p.stopping;
            --stopping_total;
            deadlines.disarm(w.kill_timer);
            break;
        case WorkerState::gone:
            break;
        }
    }

    void enter(Worker& w, TimePoint now) {
        Pool& p = *w.pool;
        switch (w.state) {
        case WorkerState::starting:
        case WorkerState::finishing:
            ++p.pending;
            if (p.limits.per_user) ++user_count(p, w.user).pending;
            break;
        case WorkerState::idle:
            ++p.idle_count;
            w.idle_since = now;
            p.idle.push_front(w);
            if (!w.user.empty()) p.idle_by_user[w.user].push_front(w);
            break;
        case WorkerState::leased:
            break;
        case WorkerState::stopping:
            ++p.stopping;
            ++stopping_total;
            break;
        case WorkerState::gone:
            break;
        }
    }

    // ---- workers -------------------------------------------------------------

    void spawn(Pool& p, const std::string& user, TimePoint now, Decisions& out) {
        auto owned = std::make_unique<Worker>();
        Worker& w = *owned;
        w.id = next_worker++;
        w.pool = &p;
        w.user = p.limits.per_user ? user : std::string{};
        w.started_at = now;
        w.max_requests = jittered(p.limits.max_requests, p.limits.recycle_jitter_pct);
        auto lifetime_ms = static_cast<std::uint64_t>(
            std::chrono::duration_cast<Millis>(p.limits.max_lifetime).count());
        if (auto drawn = jittered(lifetime_ms, p.limits.recycle_jitter_pct))
            deadlines.arm(w.lifetime_timer, now + Millis(drawn));
        if (p.limits.start_timeout.count() > 0) deadlines.arm(w.ready_timer, now + p.limits.start_timeout);
        p.workers.push_back(w);
        ++p.total;
        ++total;
        if (p.limits.per_user) ++user_count(p, w.user).workers;
        enter(w, now);
        workers.emplace(w.id, std::move(owned));
        ++p.workers_started;
        out.push_back(Spawn{w.id, p.name, w.user});
    }

    bool must_retire(const Worker& w) const {
        return w.retire_when_free || w.lifetime_passed || w.pool->draining || shutting_down ||
               (w.max_requests != 0 && w.requests >= w.max_requests);
    }

    /// SIGTERM now (or as soon as its pid is known), SIGKILL after kill_grace.
    void retire(Worker& w, TimePoint now, Decisions& out) {
        if (w.state == WorkerState::stopping || w.state == WorkerState::gone) return;
        apply(w, WorkerEvent::retire, now);
        deadlines.disarm(w.lifetime_timer);
        if (w.pid == 0) {
            w.terminate_when_started = true;
            return;
        }
        out.push_back(Terminate{w.id, w.pid});
        deadlines.arm(w.kill_timer, now + w.pool->limits.kill_grace);
    }

    /// `w` just became idle: retire it, give it to the oldest request it can
    /// serve, or leave it on the idle lists.
    void make_available(Worker& w, TimePoint now, Decisions& out) {
        Pool& p = *w.pool;
        if (must_retire(w)) {
            retire(w, now, out);
            return;
        }
        if (Request* r = next_waiting(p, w)) {
            grant_waiting(*r, w, now, out);
            return;
        }
        if (p.limits.max_idletime.count() > 0)
            deadlines.arm(w.idle_timer, now + p.limits.max_idletime);
    }

    /// The waiting LEASE an available `w` serves next, if any: in a per_user
    /// pool its user's oldest; else the oldest of the user whose turn it is,
    /// who then goes to the back of the round.
    Request* next_waiting(Pool& p, Worker& w) {
        if (p.limits.per_user) {
            auto it = p.users.find(w.user);
            if (it == p.users.end() || it->second.queue.empty()) return nullptr;
            return &it->second.queue.front();
        }
        if (p.round.empty()) return nullptr;
        UserCount* turn = &p.round.front();
        Request& r = turn->queue.front();
        if (turn->waiting > 1) {
            turn->round_hook.unlink();
            p.round.push_back(*turn);
        }
        return &r;
    }

    void remove_worker(Worker& w, TimePoint now) {
        Pool& p = *w.pool;
        apply(w, WorkerEvent::exited, now);
        --p.total;
        --total;
        if (p.limits.per_user) {
            --user_count(p, w.user).workers;
            drop_if_empty(p, w.user);
        }
        if (w.pid != 0) by_pid.erase(w.pid);
        workers.erase(w.id);
    }

    /// Death before ready: back off 100 ms doubling to 30 s; requests that
    /// cannot wait that long fail now.
    void record_failure(Pool& p, TimePoint now, Decisions& out) {
        ++p.failures;
        ++p.start_failures_total;
        auto delay = policy::spawn_backoff_initial;
        for (std::uint32_t i = 1; i < p.failures && delay < policy::spawn_backoff_max; ++i) delay *= 2;
        delay = std::min(delay, policy::spawn_backoff_max);
        p.backoff_until = now + delay;
        deadlines.arm(p.backoff_timer, *p.backoff_until);
        for (auto it = p.queue.begin(); it != p.queue.end();) {
            Request& r = *it++;
            if (r.wait_timer.at() < *p.backoff_until)
                reject_waiting(r, FailCode::spawn_failed, spawn_failed_text(p, now), out);
        }
    }

    std::string spawn_failed_text(const Pool& p, TimePoint now) const {
        std::string text = "pool " + p.name + " cannot start workers";
        if (!p.last_spawn_error.empty()) text += ": " + p.last_spawn_error;
        if (p.backoff_until)
            text += " (next try in " +
                    ms_text(std::chrono::duration_cast<Millis>(*p.backoff_until - now)) + ")";
        return text;
    }

    void reset_backoff(Pool& p) {
        p.failures = 0;
        p.backoff_until.reset();
        deadlines.disarm(p.backoff_timer);
    }

    // ---- leases --------------------------------------------------------------

    void grant(const LeaseTerms& terms, Worker& w, TimePoint now, Decisions& out) {
        Pool& p = *w.pool;
        apply(w, WorkerEvent::granted, now);
        auto owned = std::make_unique<Lease>();
        Lease& l = *owned;
        l.id = next_lease++;
        l.worker = &w;
        l.client = terms.client;
        l.uid = terms.uid;
        l.detached = terms.detach;
        l.user = terms.user;
        l.ttl = terms.ttl;
        l.granted_at = now;
        deadlines.arm(l.ttl_timer, now + l.ttl);
        if (p.limits.max_processtime.count() > 0)
            deadlines.arm(l.processtime_timer, now + p.limits.max_processtime);
        if (p.limits.notify != NotifyMode::none && p.limits.heartbeat_timeout.count() > 0)
            deadlines.arm(w.heartbeat_timer, now + p.limits.heartbeat_timeout);
        w.lease = &l;
        ++w.requests;
        if (!p.limits.per_user) w.user = terms.user;
        ++p.leases_granted;
        ++user_count(p, terms.user).leases;
        clients[terms.client].leases.push_back(l);
        leases.emplace(l.id, std::move(owned));
        out.push_back(Grant{terms.ticket, terms.client, l.id, w.id, w.pid, terms.ttl});
    }

    void grant_waiting(Request& r, Worker& w, TimePoint now, Decisions& out) {
        // A copy: drop_request still reads the user (a moved-from one once
        // left the user's waiting count too high for max_leases_per_user).
        LeaseTerms terms = r.terms;
        drop_request(r);
        grant(terms, w, now, out);
    }

    void drop_request(Request& r) {
        Pool& p = *r.pool;
        --p.queued;
        --queued_total;
        UserCount& u = user_count(p, r.terms.user);
        --u.waiting;
        r.user_hook.unlink();
        if (u.queue.empty() && u.round_hook.is_linked()) u.round_hook.unlink();
        drop_if_empty(p, r.terms.user);
        requests.erase(r.terms.ticket); // unlinks its queue, client and timer hooks
    }

    void reject_waiting(Request& r, FailCode code, std::string text, Decisions& out) {
        out.push_back(Reject{r.terms.ticket, r.terms.client, code, std::move(text)});
        drop_request(r);
    }

    /// What becomes of the worker when its lease ends.
    enum class After {
        reuse,     ///< idle again (notify=foreman: after its READY=1)
        ready_now, ///< it said READY=1: idle now
        retire,    ///< hung, over its processtime, or the broker is stopping
        exited,    ///< it is gone; the caller removes it
    };

    void end_lease(Lease& l, EndReason reason, After after, TimePoint now, Decisions& out) {
        Worker& w = *l.worker;
        Pool& p = *w.pool;
        if (protocol::is_expiry(reason) && l.client != 0) out.push_back(Expire{l.client, l.id, reason});
        ++p.leases_ended[static_cast<std::size_t>(reason)];
        --user_count(p, l.user).leases;
        drop_if_empty(p, l.user);
        w.lease = nullptr;
        leases.erase(l.id);
        switch (after) {
        case After::exited:
            return;
        case After::retire:
            retire(w, now, out);
            return;
        case After::ready_now:
            apply(w, WorkerEvent::ready, now);
            make_available(w, now, out);
            return;
        case After::reuse:
            if (must_retire(w)) {
                retire(w, now, out);
            } else if (p.limits.notify == NotifyMode::foreman) {
                apply(w, WorkerEvent::lease_ended_owes_ready, now);
                if (p.limits.start_timeout.count() > 0)
                    deadlines.arm(w.ready_timer, now + p.limits.start_timeout);
            } else {
                apply(w, WorkerEvent::lease_ended, now);
                make_available(w, now, out);
            }
            return;
        }
    }

    Lease* owned_lease(LeaseId id, ClientId client, Uid uid) {
        auto it = leases.find(id);
        if (it == leases.end()) return nullptr;
        Lease& l = *it->second;
        if (l.client == client && client != 0) return &l;
        if (l.detached && l.uid == uid) return &l;
        return nullptr;
    }

    // ---- supply --------------------------------------------------------------

    bool may_spawn(const Pool& p, TimePoint now) const {
        return !p.draining && !shutting_down && !(p.backoff_until && now < *p.backoff_until);
    }

    /// The least recently used idle worker outside `except`.
    Worker* lru_idle_elsewhere(const Pool* except) {
        Worker* best = nullptr;
        for (auto& pool : pools) {
            if (pool.get() == except || pool->idle.empty()) continue;
            Worker& candidate = pool->idle.back();
            if (!best || candidate.idle_since < best->idle_since) best = &candidate;
        }
        return best;
    }

    /// Frees global slots for `need` more workers by retiring idle workers of
    /// other pools, counting those already stopping.
    void evict_elsewhere(const Pool& p, std::size_t need, TimePoint now, Decisions& out) {
        while (stopping_total < need) {
            Worker* victim = lru_idle_elsewhere(&p);
            if (!victim) return;
            retire(*victim, now, out);
        }
    }

    /// Starts the workers `p` needs for its waiting requests and min_idle.
    void pump(Pool& p, TimePoint now, Decisions& out) {
        if (!may_spawn(p, now)) return;
        if (p.limits.per_user) {
            pump_per_user(p, now, out);
            return;
        }
        std::size_t supply = p.idle_count + p.pending;
        std::size_t queued_unmet = p.queued > supply ? p.queued - supply : 0;
        std::size_t demand = p.queued + p.limits.min_idle;
        std::size_t want = demand > supply ? demand - supply : 0;
        while (want > 0 && p.room() && global_room()) {
            spawn(p, {}, now, out);
            --want;
            if (queued_unmet > 0) --queued_unmet;
        }
        if (queued_unmet > 0 && p.room() && !global_room()) evict_elsewhere(p, queued_unmet, now, out);
    }

    void pump_per_user(Pool& p, TimePoint now, Decisions& out) {
        if (p.queue.empty()) return;
        std::unordered_map<std::string, std::uint32_t> claimed;
        std::size_t blocked_by_pool = 0;
        std::size_t blocked_by_global = 0;
        for (Request& r : p.queue) {
            const std::string& user = r.terms.user;
            std::uint32_t& c = claimed[user];
            auto it = p.users.find(user);
            std::uint32_t pending = it == p.users.end() ? 0 : it->second.pending;
            std::uint32_t workers_of_user = it == p.users.end() ? 0 : it->second.workers;
            if (c < pending) {
                ++c; // a worker starting (or finishing) for this user will serve it
                continue;
            }
            if (workers_of_user >= p.limits.max_instances_per_user) continue; // wait for theirs
            if (p.room() && global_room()) {
                spawn(p, user, now, out);
                ++c;
            } else if (!p.room()) {
                ++blocked_by_pool;
            } else {
                ++blocked_by_global;
            }
        }
        // At max_instances, idle workers of other users make room.
        while (p.stopping < blocked_by_pool && !p.idle.empty()) retire(p.idle.back(), now, out);
        if (blocked_by_global > 0) evict_elsewhere(p, blocked_by_global, now, out);
    }

    /// `p` changed; other pools' waiting requests may now evict its idle
    /// workers at the global cap.
    void pump_after_change(Pool& p, TimePoint now, Decisions& out) {
        pump(p, now, out);
        if (queued_total > p.queued)
            for (auto& other : pools)
                if (other.get() != &p && other->queued > 0) pump(*other, now, out);
    }

    void pump_all(TimePoint now, Decisions& out) {
        // Waiting requests before min_idle: a freed slot goes to demand first.
        for (auto& p : pools)
            if (p->queued > 0) pump(*p, now, out);
        for (auto& p : pools)
            if (p->queued == 0) pump(*p, now, out);
    }

    void forget_pool_if_done(Pool& p) {
        if (!p.draining || p.total > 0) return;
        auto it = std::find_if(pools.begin(), pools.end(), [&](auto& q) { return q.get() == &p; });
        if (it != pools.end()) pools.erase(it);
    }

    // ---- timers --------------------------------------------------------------

    void fire(Timer& t, TimePoint now, Decisions& out) {
        switch (t.kind()) {
        case DeadlineKind::lease_ttl: {
            Lease& l = *static_cast<Lease*>(t.owner());
            Pool& p = *l.worker->pool;
            end_lease(l, EndReason::ttl, After::reuse, now, out);
            pump(p, now, out);
            break;
        }
        case DeadlineKind::lease_processtime: {
            Lease& l = *static_cast<Lease*>(t.owner());
            end_lease(l, EndReason::processtime, After::retire, now, out);
            break;
        }
        case DeadlineKind::worker_heartbeat: {
            Worker& w = *static_cast<Worker*>(t.owner());
            if (w.lease) end_lease(*w.lease, EndReason::worker_exit, After::retire, now, out);
            break;
        }
        case DeadlineKind::worker_ready: {
            Worker& w = *static_cast<Worker*>(t.owner());
            if (w.state == WorkerState::starting) w.start_timed_out = true;
            retire(w, now, out);
            break;
        }
        case DeadlineKind::worker_idle: {
            Worker& w = *static_cast<Worker*>(t.owner());
            Pool& p = *w.pool;
            if (p.idle_count > p.limits.min_idle)
                retire(w, now, out);
            else
                deadlines.arm(w.idle_timer, now + p.limits.max_idletime);
            break;
        }
        case DeadlineKind::worker_lifetime: {
            Worker& w = *static_cast<Worker*>(t.owner());
            w.lifetime_passed = true;
            if (w.state != WorkerState::leased) retire(w, now, out);
            break;
        }
        case DeadlineKind::worker_kill: {
            Worker& w = *static_cast<Worker*>(t.owner());
            apply(w, WorkerEvent::grace_over, now);
            out.push_back(Kill{w.id, w.pid});
            break;
        }
        case DeadlineKind::request_wait: {
            Request& r = *static_cast<Request*>(t.owner());
            std::string text = "no worker of pool " + r.pool->name + " came free within " + ms_text(r.wait);
            reject_waiting(r, FailCode::busy, std::move(text), out);
            break;
        }
        case DeadlineKind::pool_backoff: {
            Pool& p = *static_cast<Pool*>(t.owner());
            p.backoff_until.reset();
            pump(p, now, out);
            break;
        }
        }
    }
};

// ---- public interface ------------------------------------------------------

Engine::Engine(EngineOptions options) : impl_(std::make_unique<Impl>(options)) {}
Engine::~Engine() = default;

PoolChange Engine::add_pool(TimePoint now, const std::string& protocol, const PoolLimits& limits,
                            Decisions& out) {
    auto& m = *impl_;
    if (m.shutting_down) return PoolChange::shutting_down;
    if (m.by_name.count(protocol)) return PoolChange::exists;
    auto pool = std::make_unique<Pool>();
    pool->name = protocol;
    pool->limits = limits;
    Pool& p = *pool;
    m.pools.push_back(std::move(pool));
    m.by_name.emplace(protocol, &p);
    m.pump(p, now, out);
    return PoolChange::ok;
}

PoolChange Engine::update_pool(TimePoint now, const std::string& protocol, const PoolLimits& limits,
                               bool restart_workers, Decisions& out) {
    auto& m = *impl_;
    Pool* p = m.find_pool(protocol);
    if (!p) return PoolChange::unknown;
    if (p->limits.per_user != limits.per_user) {
        // Users are counted differently: the old pool drains, a new one starts.
        remove_pool(now, protocol, out);
        return add_pool(now, protocol, limits, out);
    }
    if (restart_workers) {
        for (Worker& w : p->workers) {
            w.retire_when_free = true;
            if (w.state != WorkerState::leased) m.retire(w, now, out);
        }
    }
    p->limits = limits;
    m.pump_all(now, out);
    return PoolChange::ok;
}

PoolChange Engine::remove_pool(TimePoint now, const std::string& protocol, Decisions& out) {
    auto& m = *impl_;
    Pool* p = m.find_pool(protocol);
    if (!p) return PoolChange::unknown;
    p->draining = true;
    m.by_name.erase(protocol);
    while (!p->queue.empty())
        m.reject_waiting(p->queue.front(), FailCode::unknown_protocol,
                         "pool " + protocol + " was removed", out);
    for (auto it = p->workers.begin(); it != p->workers.end();) {
        Worker& w = *it++;
        if (w.state != WorkerState::leased) m.retire(w, now, out);
    }
    m.forget_pool_if_done(*p);
    return PoolChange::ok;
}

void Engine::set_max_workers(TimePoint now, std::uint32_t max_workers, Decisions& out) {
    impl_->options.max_workers = max_workers;
    impl_->pump_all(now, out);
}

void Engine::request_lease(TimePoint now, const LeaseRequest& rq, Decisions& out) {
    auto& m = *impl_;
    auto reject = [&](FailCode code, std::string text) {
        out.push_back(Reject{rq.ticket, rq.client, code, std::move(text)});
    };
    if (m.shutting_down) return reject(FailCode::shutting_down, "the broker is stopping");
    Pool* pp = m.find_pool(rq.protocol);
    if (!pp) return reject(FailCode::unknown_protocol, "no pool serves protocol " + rq.protocol);
    Pool& p = *pp;
    const PoolLimits& lim = p.limits;
    if (rq.version && *rq.version != lim.version)
        return reject(FailCode::version, "pool " + p.name + " serves version " +
                                             std::to_string(lim.version));
    if (lim.per_user && rq.user.empty())
        return reject(FailCode::bad_request, "pool " + p.name + " is per_user: user= is required");
    Millis ttl = rq.ttl.value_or(lim.lease_ttl);
    if (ttl < min_lease_ttl || ttl > lim.lease_ttl)
        return reject(FailCode::bad_request, "ttl_ms must be between " +
                                                 std::to_string(min_lease_ttl.count()) + " and " +
                                                 std::to_string(lim.lease_ttl.count()));
    if (lim.max_leases_per_user != 0) {
        auto it = p.users.find(rq.user);
        // Waiting LEASEs count too, or they would all be granted later.
        if (it != p.users.end() && it->second.leases + it->second.waiting >= lim.max_leases_per_user)
            return reject(FailCode::overloaded, "user '" + rq.user + "' holds or awaits " +
                                                    std::to_string(it->second.leases + it->second.waiting) +
                                                    " leases in pool " + p.name + ", the most allowed");
    }
    if (m.requests.count(rq.ticket))
        return reject(FailCode::bad_request, "duplicate tag");

    LeaseTerms terms{rq.ticket, rq.client, rq.uid, rq.user, ttl, rq.detach};

    // An idle worker: the one that last served this user, else the most
    // recently used one (per_user pools: only this user's).
    Worker* chosen = nullptr;
    if (!rq.user.empty()) {
        auto it = p.idle_by_user.find(rq.user);
        if (it != p.idle_by_user.end() && !it->second.empty()) chosen = &it->second.front();
    }
    if (!chosen && !lim.per_user && !p.idle.empty()) chosen = &p.idle.front();
    if (chosen) {
        m.grant(terms, *chosen, now, out);
        m.pump(p, now, out); // keep min_idle
        return;
    }

    Millis wait = rq.wait.value_or(lim.queue_timeout);
    if (wait.count() == 0) return reject(FailCode::busy, "no idle worker in pool " + p.name);
    if (lim.max_queue != 0 && p.queued >= lim.max_queue)
        return reject(FailCode::overloaded, std::to_string(p.queued) + " requests already wait for pool " +
                                                p.name);
    TimePoint deadline = now + wait;
    if (p.backoff_until && deadline < *p.backoff_until)
        return reject(FailCode::spawn_failed, m.spawn_failed_text(p, now));

    auto owned = std::make_unique<Request>();
    Request& r = *owned;
    r.terms = std::move(terms);
    r.pool = &p;
    r.wait = wait;
    m.deadlines.arm(r.wait_timer, deadline);
    p.queue.push_back(r);
    m.clients[rq.client].requests.push_back(r);
    ++p.queued;
    ++m.queued_total;
    UserCount& u = m.user_count(p, r.terms.user);
    ++u.waiting;
    if (u.queue.empty()) p.round.push_back(u);
    u.queue.push_back(r);
    m.requests.emplace(rq.ticket, std::move(owned));
    m.pump(p, now, out);
}

std::optional<std::chrono::milliseconds> Engine::renew(TimePoint now, LeaseId lease, ClientId client,
                                                       Uid uid) {
    auto& m = *impl_;
    Lease* l = m.owned_lease(lease, client, uid);
    if (!l) return std::nullopt;
    m.deadlines.arm(l->ttl_timer, now + l->ttl);
    return l->ttl;
}

bool Engine::release(TimePoint now, LeaseId lease, ClientId client, Uid uid, Decisions& out) {
    auto& m = *impl_;
    Lease* l = m.owned_lease(lease, client, uid);
    if (!l) return false;
    Pool& p = *l->worker->pool;
    m.end_lease(*l, EndReason::released, Impl::After::reuse, now, out);
    m.pump_after_change(p, now, out);
    return true;
}

void Engine::client_closed(TimePoint now, ClientId client, Decisions& out) {
    auto& m = *impl_;
    auto it = m.clients.find(client);
    if (it == m.clients.end()) return;
    Client& c = it->second;
    while (!c.requests.empty()) m.drop_request(c.requests.front());
    std::vector<Pool*> touched;
    while (!c.leases.empty()) {
        Lease& l = c.leases.front();
        if (l.detached) {
            l.client = 0;
            l.client_hook.unlink();
            continue;
        }
        touched.push_back(l.worker->pool);
        m.end_lease(l, EndReason::holder_closed, Impl::After::reuse, now, out);
    }
    m.clients.erase(client); // not `it`: a grant above may have rehashed the map
    for (Pool* p : touched) m.pump_after_change(*p, now, out);
}

void Engine::worker_started(TimePoint now, WorkerId worker, int pid, Decisions& out) {
    auto& m = *impl_;
    Worker* w = m.find_worker(worker);
    if (!w || w->pid != 0) return;
    w->pid = pid;
    m.by_pid[pid] = w;
    if (w->terminate_when_started) {
        out.push_back(Terminate{w->id, pid});
        m.deadlines.arm(w->kill_timer, now + w->pool->limits.kill_grace);
    }
}

void Engine::spawn_failed(TimePoint now, WorkerId worker, const std::string& error, Decisions& out) {
    auto& m = *impl_;
    Worker* w = m.find_worker(worker);
    if (!w) return;
    Pool& p = *w->pool;
    p.last_spawn_error = error;
    bool counts = w->state != WorkerState::stopping || w->start_timed_out;
    m.remove_worker(*w, now);
    if (counts) m.record_failure(p, now, out);
    m.forget_pool_if_done(p);
    m.pump_all(now, out);
}

void Engine::worker_ready(TimePoint now, WorkerId worker, Decisions& out) {
    auto& m = *impl_;
    Worker* wp = m.find_worker(worker);
    if (!wp) return;
    Worker& w = *wp;
    Pool& p = *w.pool;
    switch (w.state) {
    case WorkerState::starting:
        m.apply(w, WorkerEvent::ready, now);
        w.ever_ready = true;
        m.reset_backoff(p); // one success resets all failures
        m.make_available(w, now, out);
        m.pump_after_change(p, now, out);
        break;
    case WorkerState::finishing:
        m.apply(w, WorkerEvent::ready, now);
        m.make_available(w, now, out);
        m.pump_after_change(p, now, out);
        break;
    case WorkerState::leased:
        if (p.limits.notify == NotifyMode::foreman) {
            m.end_lease(*w.lease, EndReason::worker_ready, Impl::After::ready_now, now, out);
            m.pump_after_change(p, now, out);
        } else if (w.heartbeat_timer.armed()) {
            // notify=systemd: READY=1 proves liveness but does not renew the lease.
            m.deadlines.arm(w.heartbeat_timer, now + p.limits.heartbeat_timeout);
        }
        break;
    case WorkerState::idle:
    case WorkerState::stopping:
    case WorkerState::gone:
        m.apply(w, WorkerEvent::ready, now); // ignored by the table
        break;
    }
}

void Engine::worker_heartbeat(TimePoint now, WorkerId worker, Decisions&) {
    auto& m = *impl_;
    Worker* w = m.find_worker(worker);
    if (!w) return;
    m.apply(*w, WorkerEvent::heartbeat, now); // checks the pair; never moves
    if (w->state != WorkerState::leased) return;
    Pool& p = *w->pool;
    if (w->heartbeat_timer.armed()) m.deadlines.arm(w->heartbeat_timer, now + p.limits.heartbeat_timeout);
    m.deadlines.arm(w->lease->ttl_timer, now + w->lease->ttl);
}

void Engine::worker_stopping(TimePoint now, WorkerId worker, Decisions& out) {
    auto& m = *impl_;
    Worker* w = m.find_worker(worker);
    if (!w) return;
    w->retire_when_free = true;
    if (w->state != WorkerState::leased) {
        Pool& p = *w->pool;
        m.retire(*w, now, out);
        m.pump_after_change(p, now, out);
    }
}

void Engine::worker_status(WorkerId worker, std::string text) {
    if (Worker* w = impl_->find_worker(worker)) w->status = std::move(text);
}

void Engine::worker_exited(TimePoint now, WorkerId worker, Decisions& out) {
    auto& m = *impl_;
    Worker* wp = m.find_worker(worker);
    if (!wp) return;
    Worker& w = *wp;
    Pool& p = *w.pool;
    if (w.lease) m.end_lease(*w.lease, EndReason::worker_exit, Impl::After::exited, now, out);
    // Death before ready feeds the back-off, unless we stopped it for another
    // reason than its start timeout (eviction, shutdown, removal).
    bool failed_start = !w.ever_ready && (w.state != WorkerState::stopping || w.start_timed_out);
    m.remove_worker(w, now);
    if (failed_start) m.record_failure(p, now, out);
    m.forget_pool_if_done(p);
    m.pump_all(now, out);
}

std::optional<WorkerId> Engine::worker_by_pid(int pid) const {
    auto it = impl_->by_pid.find(pid);
    if (it == impl_->by_pid.end()) return std::nullopt;
    return it->second->id;
}

std::optional<TimePoint> Engine::next_deadline() const { return impl_->deadlines.next(); }

void Engine::expire(TimePoint now, Decisions& out) {
    auto& m = *impl_;
    bool fired = false;
    while (Timer* t = m.deadlines.pop_due(now)) {
        m.fire(*t, now, out);
        fired = true;
    }
    // Retired workers leave room, and min_idle may want replacements.
    if (fired) m.pump_all(now, out);
}

void Engine::begin_shutdown(TimePoint now, Decisions& out) {
    auto& m = *impl_;
    if (m.shutting_down) return;
    m.shutting_down = true;
    for (auto& p : m.pools) {
        while (!p->queue.empty())
            m.reject_waiting(p->queue.front(), FailCode::shutting_down, "the broker is stopping", out);
        for (Worker& w : p->workers)
            if (w.state != WorkerState::leased) m.retire(w, now, out);
    }
}

void Engine::end_all(TimePoint now, Decisions& out) {
    auto& m = *impl_;
    begin_shutdown(now, out);
    while (!m.leases.empty())
        m.end_lease(*m.leases.begin()->second, EndReason::shutdown, Impl::After::retire, now, out);
    for (auto& p : m.pools)
        for (Worker& w : p->workers) m.retire(w, now, out);
}

std::size_t Engine::live_leases() const { return impl_->leases.size(); }
std::size_t Engine::workers_total() const { return impl_->total; }

Snapshot Engine::snapshot(TimePoint) const {
    auto& m = *impl_;
    Snapshot s{m.total, m.options.max_workers, m.shutting_down, {}};
    for (auto& p : m.pools) {
        PoolView pv{p->name, p->limits, p->draining, p->queued, p->leases_granted, p->workers_started,
                    p->failures, p->backoff_until, p->last_spawn_error, {}, {}};
        pv.leases_ended = p->leases_ended;
        pv.start_failures_total = p->start_failures_total;
        for (const Worker& w : p->workers) {
            WorkerView wv{w.id, w.pid, w.state, w.requests, w.max_requests, w.user, w.status,
                          w.started_at, std::nullopt};
            if (const Lease* l = w.lease)
                wv.lease = LeaseView{l->id, l->client, l->uid, l->detached, l->user, l->ttl,
                                     l->granted_at, l->ttl_timer.at()};
            pv.workers.push_back(std::move(wv));
        }
        for (const auto& [user, c] : p->users)
            if (c.leases != 0 || c.waiting != 0 || c.workers != 0)
                pv.users.push_back(UserView{user, c.leases, c.waiting, c.workers});
        std::sort(pv.users.begin(), pv.users.end(),
                  [](const UserView& a, const UserView& b) { return a.user < b.user; });
        s.pools.push_back(std::move(pv));
    }
    return s;
}

} // namespace foreman::lease
