// Randomized property test of the lease engine: thousands of random event
// sequences from a fixed seed, against a small model of the world (clients,
// processes, a clock), with PROTOCOL.md's invariants checked after every step.

#include "lease/engine.hpp"

#include <catch2/catch.hpp>

#include <map>
#include <random>
#include <set>
#include <sstream>

using namespace foreman::lease;
using namespace std::chrono_literals;
using foreman::protocol::EndReason;

namespace {

struct ModelLease {
    ClientId client;
    Millis ttl;
    TimePoint last_renewal;
};

struct Process {
    WorkerId worker;
    bool alive = true;
};

/// One random run: the engine, the world it acts on, and the invariants.
class Run {
public:
    explicit Run(std::uint64_t seed) : rng_(seed) {
        max_workers_ = pick(1, 8);
        engine_ = std::make_unique<Engine>(EngineOptions{max_workers_, seed});
        int pools = pick(1, 3);
        for (int i = 0; i < pools; ++i) {
            PoolLimits lim;
            lim.max_instances = pick(0, 4);
            lim.max_requests = pick(0, 3);
            lim.max_idletime = Seconds(pick(0, 2));
            lim.max_processtime = Seconds(pick(0, 2));
            lim.max_lifetime = Seconds(pick(0, 3));
            lim.min_idle = lim.max_instances ? pick(0, static_cast<int>(lim.max_instances)) : pick(0, 2);
            lim.notify = static_cast<NotifyMode>(pick(0, 2));
            lim.lease_ttl = Millis(pick(100, 1500));
            lim.heartbeat_timeout = lim.notify == NotifyMode::none ? 0ms : Millis(pick(0, 800));
            lim.start_timeout = Millis(pick(50, 600));
            lim.kill_grace = Millis(pick(10, 400));
            lim.queue_timeout = Millis(pick(0, 1000));
            lim.max_queue = pick(0, 4);
            lim.per_user = pick(0, 3) == 0;
            if (lim.per_user) lim.min_idle = 0;
            lim.max_instances_per_user = pick(1, 2);
            lim.max_leases_per_user = pick(0, 2);
            lim.recycle_jitter_pct = pick(0, 50);
            std::string name = "p" + std::to_string(i);
            limits_[name] = lim;
            engine_->add_pool(now_, name, lim, out_);
        }
        settle();
    }

    void step() {
        switch (pick(0, 13)) {
        case 0:
        case 1:
        case 2: lease(); break;
        case 3: renew(); break;
        case 4:
        case 5: release(); break;
        case 6: close_client(); break;
        case 7:
        case 8: ready(); break;
        case 9: heartbeat(); break;
        case 10: deliver_exit(); break;
        case 11: crash(); break;
        case 12: advance(Millis(pick(0, 400))); break;
        case 13: if (pick(0, 20) == 0) engine_->worker_stopping(now_, any_worker(), out_); break;
        }
        settle();
    }

    void finish() {
        // Everything still waiting is answered by its deadline, at the latest.
        advance(5s);
        check_invariants();
    }

    std::string trace() const { return log_.str(); }

private:
    int pick(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }

    std::string any_pool() {
        auto it = limits_.begin();
        std::advance(it, pick(0, static_cast<int>(limits_.size()) - 1));
        // Now and then a protocol nobody serves.
        return pick(0, 30) == 0 ? std::string("nosuch") : it->first;
    }

    WorkerId any_worker() {
        if (processes_.empty()) return 999999;
        auto it = processes_.begin();
        std::advance(it, pick(0, static_cast<int>(processes_.size()) - 1));
        return it->second.worker;
    }

    void lease() {
        LeaseRequest rq;
        rq.ticket = next_ticket_++;
        rq.client = static_cast<ClientId>(pick(1, 5));
        closed_.erase(rq.client); // a closed id comes back as a new connection
        rq.uid = static_cast<Uid>(pick(0, 1));
        rq.protocol = any_pool();
        static const char* users[] = {"", "alice", "bob", "carol"};
        rq.user = users[pick(0, 3)];
        if (pick(0, 2) == 0) rq.ttl = Millis(pick(50, 1600));
        if (pick(0, 1) == 0) rq.wait = Millis(pick(0, 800));
        rq.detach = pick(0, 4) == 0;
        auto lim = limits_.find(rq.protocol);
        Millis wait = rq.wait.value_or(lim == limits_.end() ? 0ms : lim->second.queue_timeout);
        pending_[rq.ticket] = {rq.client, now_ + wait};
        log_ << "t=" << ms() << " LEASE ticket=" << rq.ticket << " client=" << rq.client << " "
             << rq.protocol << " user=" << rq.user << " wait=" << wait.count() << "\n";
        engine_->request_lease(now_, rq, out_);
    }

    std::optional<LeaseId> any_lease() {
        if (leases_.empty()) return std::nullopt;
        auto it = leases_.begin();
        std::advance(it, pick(0, static_cast<int>(leases_.size()) - 1));
        return it->first;
    }

    void renew() {
        auto id = any_lease();
        if (!id) return;
        auto& l = leases_[*id];
        bool owner = l.client != 0 && pick(0, 5) != 0;
        ClientId client = owner ? l.client : static_cast<ClientId>(pick(1, 5));
        auto ttl = engine_->renew(now_, *id, client, 0);
        log_ << "t=" << ms() << " RENEW " << *id << " by " << client << (ttl ? " ok\n" : " no\n");
        if (ttl) l.last_renewal = now_;
    }

    void release() {
        auto id = any_lease();
        if (!id) return;
        auto& l = leases_[*id];
        ClientId client = l.client != 0 && pick(0, 5) != 0 ? l.client : static_cast<ClientId>(pick(1, 5));
        bool ok = engine_->release(now_, *id, client, 0, out_);
        log_ << "t=" << ms() << " RELEASE " << *id << " by " << client << (ok ? " ok\n" : " no\n");
        if (ok) leases_.erase(*id);
    }

    void close_client() {
        ClientId c = static_cast<ClientId>(pick(1, 5));
        log_ << "t=" << ms() << " CLOSE client " << c << "\n";
        engine_->client_closed(now_, c, out_);
        closed_.insert(c);
        for (auto it = pending_.begin(); it != pending_.end();)
            it = it->second.first == c ? pending_.erase(it) : std::next(it);
    }

    void ready() {
        WorkerId w = any_worker();
        log_ << "t=" << ms() << " READY worker " << w << "\n";
        engine_->worker_ready(now_, w, out_);
    }

    void heartbeat() {
        WorkerId w = any_worker();
        log_ << "t=" << ms() << " WATCHDOG worker " << w << "\n";
        engine_->worker_heartbeat(now_, w, out_);
        // A heartbeat renews the lease its worker serves.
        auto snap = engine_->snapshot(now_);
        for (auto& p : snap.pools)
            for (auto& wv : p.workers)
                if (wv.id == w && wv.lease && leases_.count(wv.lease->id))
                    leases_[wv.lease->id].last_renewal = now_;
    }

    void deliver_exit() {
        if (exiting_.empty()) return;
        int pid = *exiting_.begin();
        exiting_.erase(exiting_.begin());
        exit_process(pid);
    }

    void crash() {
        if (processes_.empty() || pick(0, 3) != 0) return;
        auto it = processes_.begin();
        std::advance(it, pick(0, static_cast<int>(processes_.size()) - 1));
        exit_process(it->first);
    }

    void exit_process(int pid) {
        auto it = processes_.find(pid);
        if (it == processes_.end()) return;
        WorkerId w = it->second.worker;
        processes_.erase(it);
        exiting_.erase(pid);
        log_ << "t=" << ms() << " EXIT pid " << pid << " worker " << w << "\n";
        engine_->worker_exited(now_, w, out_);
    }

    /// Moves the clock to `now_ + d`, firing every deadline on its way at its time.
    void advance(Millis d) {
        TimePoint target = now_ + d;
        while (auto next = engine_->next_deadline()) {
            if (*next > target) break;
            now_ = std::max(now_, *next);
            engine_->expire(now_, out_);
            settle();
        }
        now_ = target;
        engine_->expire(now_, out_);
        settle();
    }

    /// Carries out the decisions like a broker would, then checks everything.
    void settle() {
        while (!out_.empty()) {
            Decisions batch;
            batch.swap(out_);
            for (auto& d : batch) carry_out(d);
        }
        check_invariants();
    }

    void carry_out(const Decision& d) {
        if (auto* g = std::get_if<Grant>(&d)) {
            log_ << "  -> GRANT ticket=" << g->ticket << " lease=" << g->lease << " worker=" << g->worker << "\n";
            REQUIRE(pending_.count(g->ticket) == 1);
            REQUIRE(answered_.insert(g->ticket).second);
            pending_.erase(g->ticket);
            REQUIRE(g->lease > last_lease_); // strictly increasing fencing tokens
            last_lease_ = g->lease;
            REQUIRE_FALSE(closed_.count(g->client));
            leases_[g->lease] = ModelLease{g->client, g->ttl, now_};
        } else if (auto* r = std::get_if<Reject>(&d)) {
            log_ << "  -> REJECT ticket=" << r->ticket << " " << to_string(r->code) << " " << r->text << "\n";
            REQUIRE(pending_.count(r->ticket) == 1);
            REQUIRE(answered_.insert(r->ticket).second);
            pending_.erase(r->ticket);
        } else if (auto* s = std::get_if<Spawn>(&d)) {
            log_ << "  -> SPAWN worker " << s->worker << "\n";
            if (pick(0, 9) == 0) {
                engine_->spawn_failed(now_, s->worker, "exec: No such file or directory", out_);
            } else {
                int pid = next_pid_++;
                processes_[pid] = Process{s->worker};
                engine_->worker_started(now_, s->worker, pid, out_);
            }
        } else if (auto* t = std::get_if<Terminate>(&d)) {
            log_ << "  -> TERM pid " << t->pid << "\n";
            REQUIRE(processes_.count(t->pid) == 1);
            if (pick(0, 3) != 0) exiting_.insert(t->pid); // some ignore SIGTERM
        } else if (auto* k = std::get_if<Kill>(&d)) {
            log_ << "  -> KILL pid " << k->pid << "\n";
            REQUIRE(processes_.count(k->pid) == 1);
            exiting_.insert(k->pid);
        } else if (auto* e = std::get_if<Expire>(&d)) {
            log_ << "  -> EXPIRED " << e->lease << " " << to_string(e->reason) << "\n";
            REQUIRE(leases_.count(e->lease) == 1);
            REQUIRE(leases_[e->lease].client == e->client);
            REQUIRE_FALSE(closed_.count(e->client));
            leases_.erase(e->lease);
        }
    }

    void check_invariants() {
        Snapshot s = engine_->snapshot(now_);
        std::size_t total = 0;
        std::set<LeaseId> live;
        for (auto& p : s.pools) {
            auto lim = p.limits;
            if (lim.max_instances != 0) REQUIRE(p.workers.size() <= lim.max_instances);
            total += p.workers.size();
            for (auto& w : p.workers) {
                // A worker holds at most one lease, and only while leased.
                REQUIRE((w.state == WorkerState::leased) == w.lease.has_value());
                if (!w.lease) continue;
                REQUIRE(live.insert(w.lease->id).second);
                // No lease outlives its ttl without renewal.
                REQUIRE(w.lease->expires_at > now_);
                auto it = leases_.find(w.lease->id);
                REQUIRE(it != leases_.end());
                REQUIRE(w.lease->expires_at == it->second.last_renewal + it->second.ttl);
            }
            // The per-user counts add up to the pool's, and stay in bounds.
            std::size_t leased = 0, waiting = 0;
            std::map<std::string, std::uint32_t> workers_of;
            for (auto& w : p.workers) {
                if (w.lease) ++leased;
                if (lim.per_user) ++workers_of[w.user];
            }
            for (auto& u : p.users) {
                INFO("pool " << p.protocol << " user '" << u.user << "'");
                leased -= u.leases;
                waiting += u.waiting;
                if (lim.max_leases_per_user != 0) REQUIRE(u.leases + u.waiting <= lim.max_leases_per_user);
                if (lim.per_user) {
                    REQUIRE(u.workers == workers_of[u.user]);
                    REQUIRE(u.workers <= lim.max_instances_per_user);
                }
            }
            REQUIRE(leased == 0);
            REQUIRE(waiting == p.queued);
        }
        REQUIRE(total == s.workers_total);
        REQUIRE(total <= max_workers_);
        // The model's leases that the engine dropped ended silently (released,
        // holder closed, or the holder was gone): forget them.
        for (auto it = leases_.begin(); it != leases_.end();)
            it = live.count(it->first) ? std::next(it) : leases_.erase(it);
        // Every waiting request is answered by its deadline.
        for (auto& [ticket, waiting] : pending_) {
            INFO("ticket " << ticket);
            REQUIRE(waiting.second > now_);
        }
    }

    long long ms() const { return std::chrono::duration_cast<Millis>(now_.time_since_epoch()).count(); }

    std::mt19937_64 rng_;
    std::uint32_t max_workers_;
    std::unique_ptr<Engine> engine_;
    std::map<std::string, PoolLimits> limits_;
    Decisions out_;
    TimePoint now_{};
    Ticket next_ticket_ = 1;
    int next_pid_ = 100;
    LeaseId last_lease_ = 0;
    std::map<Ticket, std::pair<ClientId, TimePoint>> pending_;
    std::set<Ticket> answered_;
    std::map<LeaseId, ModelLease> leases_;
    std::map<int, Process> processes_;
    std::set<int> exiting_;
    std::set<ClientId> closed_;
    std::ostringstream log_;
};

} // namespace

TEST_CASE("random event sequences keep every lease invariant", "[lease][property]") {
    constexpr int sequences = 2000;
    constexpr int steps = 150;
    for (int seq = 0; seq < sequences; ++seq) {
        Run run(0x5eed0000u + static_cast<std::uint64_t>(seq));
        try {
            for (int i = 0; i < steps; ++i) run.step();
            run.finish();
        } catch (...) {
            // The event log of the failing sequence says how it got there.
            FAIL_CHECK("sequence " << seq << " failed; its events:\n" << run.trace());
            throw;
        }
    }
    SUCCEED("2000 sequences of 150 steps");
}
