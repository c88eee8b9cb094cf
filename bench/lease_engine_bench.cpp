// The lease engine alone, no I/O: what one grant+release costs as the pool
// grows, and what expire() costs with many live leases.
// Target (issue 2): grant+release at 10,000 workers within 2x of 10 workers,
// and under 1 us.

#include "lease/engine.hpp"

#include <benchmark/benchmark.h>

#include <stdexcept>
#include <variant>

using namespace foreman::lease;
using namespace std::chrono_literals;

namespace {

/// An engine with one pool of `workers` ready, idle workers.
struct ReadyPool {
    Engine engine{EngineOptions{1'000'000, 1}};
    Decisions out;
    TimePoint now{};
    Ticket ticket = 1;

    explicit ReadyPool(int workers, PoolLimits limits = {}) {
        limits.min_idle = static_cast<std::uint32_t>(workers);
        limits.lease_ttl = 60s;
        engine.add_pool(now, "echo", limits, out);
        Decisions spawns;
        spawns.swap(out);
        int pid = 1000;
        for (auto& d : spawns) {
            auto& s = std::get<Spawn>(d);
            engine.worker_started(now, s.worker, pid++, out);
            engine.worker_ready(now, s.worker, out);
        }
        out.clear();
    }

    LeaseId lease(const std::string& user = {}) {
        LeaseRequest rq{ticket++, 1, 0, "echo", user, std::nullopt, 0ms, std::nullopt, false};
        engine.request_lease(now, rq, out);
        auto* g = std::get_if<Grant>(&out.front());
        if (!g) throw std::runtime_error("no grant");
        LeaseId id = g->lease;
        out.clear();
        return id;
    }
};

void BM_GrantRelease(benchmark::State& state) {
    ReadyPool pool(static_cast<int>(state.range(0)));
    for (auto _ : state) {
        LeaseId id = pool.lease();
        pool.engine.release(pool.now, id, 1, 0, pool.out);
        pool.out.clear();
        pool.now += 1us;
    }
    state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_GrantRelease)->Arg(10)->Arg(1'000)->Arg(10'000);

/// The same cycle while all other workers are leased: their TTL timers fill
/// the deadline index, and the cycle's own timer is inserted among them.
void BM_GrantReleaseBusyPool(benchmark::State& state) {
    int workers = static_cast<int>(state.range(0));
    ReadyPool pool(workers);
    for (int i = 0; i < workers - 1; ++i) pool.lease();
    for (auto _ : state) {
        LeaseId id = pool.lease();
        pool.engine.release(pool.now, id, 1, 0, pool.out);
        pool.out.clear();
        pool.now += 1us;
    }
    state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_GrantReleaseBusyPool)->Arg(10)->Arg(1'000)->Arg(10'000);

/// With users: the same-user affinity lookup on every grant.
void BM_GrantReleaseWithUser(benchmark::State& state) {
    ReadyPool pool(static_cast<int>(state.range(0)));
    int n = 0;
    std::string users[] = {"alice", "bob", "carol", "dave"};
    for (auto _ : state) {
        LeaseId id = pool.lease(users[n++ & 3]);
        pool.engine.release(pool.now, id, 1, 0, pool.out);
        pool.out.clear();
        pool.now += 1us;
    }
    state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_GrantReleaseWithUser)->Arg(10)->Arg(1'000)->Arg(10'000);

/// expire() when nothing is due, with 10,000 live leases: the common case of
/// a timer wake-up (one comparison).
void BM_ExpireNothingDue(benchmark::State& state) {
    int leases = static_cast<int>(state.range(0));
    ReadyPool pool(leases);
    for (int i = 0; i < leases; ++i) pool.lease();
    for (auto _ : state) {
        pool.engine.expire(pool.now, pool.out);
        benchmark::DoNotOptimize(pool.out.size());
    }
}
BENCHMARK(BM_ExpireNothingDue)->Arg(10'000);

/// expire() when all 10,000 leases reach their TTL at once: cost per expiry.
void BM_ExpireAllDue(benchmark::State& state) {
    int leases = static_cast<int>(state.range(0));
    for (auto _ : state) {
        state.PauseTiming();
        auto pool = std::make_unique<ReadyPool>(leases);
        for (int i = 0; i < leases; ++i) pool->lease();
        TimePoint later = pool->now + 61s;
        state.ResumeTiming();
        pool->engine.expire(later, pool->out);
        state.PauseTiming();
        if (pool->out.size() < static_cast<std::size_t>(leases)) state.SkipWithError("leases did not expire");
        pool.reset();
        state.ResumeTiming();
    }
    state.SetItemsProcessed(state.iterations() * leases);
}
BENCHMARK(BM_ExpireAllDue)->Arg(10'000)->Unit(benchmark::kMillisecond);

} // namespace

BENCHMARK_MAIN();
