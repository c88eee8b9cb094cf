// foreman-bench fairness: can one user starve a shared pool? Light users
// (one client each, one LEASE at a time) run once alone and once next to a
// greedy user that keeps many LEASEs queued; their wait (LEASE sent -> OK)
// is compared. With the wait queue served round-robin across users, a light
// user waits for at most one turn of the users waiting, not for the greedy
// user's whole queue (issue 7; target: light p99 within 2x of alone).

#include "bench/broker_process.hpp"
#include "bench/load_runner.hpp"
#include "bench/modes.hpp"
#include "bench/pool_status.hpp"
#include "bench/report.hpp"
#include "client/connection.hpp"

#include <boost/program_options.hpp>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <iostream>
#include <stdexcept>
#include <thread>

namespace po = boost::program_options;

namespace foreman::bench {

namespace {

struct FairnessSettings {
    int workers = 3;
    int light = 9;
    int greedy_leases = 32;
    std::chrono::microseconds hold{2000};
    std::chrono::milliseconds think{0};
    std::chrono::milliseconds duration{5000};
    std::uint64_t wait_ms = 60000;
    int max_leases_per_user = 0; ///< the pool's key; 0: unlimited
};

/// A broker with one shared pool "echo" of `workers` ready foreman-echo workers.
struct FairnessBroker {
    explicit FairnessBroker(const FairnessSettings& s)
        : process(dir.path(), "max_clients = " + std::to_string(s.light + s.greedy_leases + 64) +
                                  "\n[pool.echo]\npath = " + bin_dir() + "/foreman-echo\nmin_idle = " +
                                  std::to_string(s.workers) + "\nmax_instances = " + std::to_string(s.workers) +
                                  "\nrecycle_jitter_pct = 0\nmax_leases_per_user = " +
                                  std::to_string(s.max_leases_per_user) + "\n") {
        auto conn = client::Connection::connect(process.socket());
        wait_for(conn, [&](const boost::json::value& st) { return pool_workers_in(st, "echo", "idle") >= s.workers; },
                 "the pool's workers to be ready");
    }

    /// Polls STATUS until `done` holds (10 s at most).
    template <class Done>
    static void wait_for(client::Connection& conn, Done done, const char* what) {
        for (int tries = 0; tries < 1000; ++tries) {
            if (done(conn.status())) return;
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        throw std::runtime_error(std::string("timed out waiting for ") + what);
    }

    ScratchDir dir;
    BrokerProcess process;
};

LoadOptions cycle_options(const FairnessSettings& s, const std::string& socket) {
    LoadOptions o;
    o.socket = socket;
    o.protocol = "echo";
    o.hold = s.hold;
    o.think = s.think;
    o.lease.wait_ms = s.wait_ms;
    return o;
}

/// The light users alone, or next to the greedy one; returns the rows measured.
std::vector<NamedResult> run_setting(const FairnessSettings& s, bool with_greedy) {
    FairnessBroker broker(s);
    const std::string& socket = broker.process.socket();

    LoadOptions greedy = cycle_options(s, socket);
    greedy.clients = s.greedy_leases; // each holds or awaits one lease: greedy_leases in all
    greedy.lease.user = "greedy";
    // Refused at max_leases_per_user: try again after ten lease times, as a
    // client that backs off would; a tight loop of refusals would measure
    // the broker's CPU under a LEASE storm instead.
    greedy.refused_pause = 10 * s.hold;
    std::atomic<bool> stop_greedy{false};
    greedy.stop = &stop_greedy;
    LoadResult greedy_result;
    std::thread greedy_thread;
    if (with_greedy) {
        greedy_thread = std::thread([&] { greedy_result = run_load(greedy); });
        // Measure only once the greedy user holds every worker and its queue is full.
        auto conn = client::Connection::connect(socket);
        int cap = s.max_leases_per_user > 0 ? std::min(s.max_leases_per_user, s.greedy_leases) : s.greedy_leases;
        int leased = std::min(cap, s.workers), queued = cap - leased;
        FairnessBroker::wait_for(
            conn,
            [&](const boost::json::value& st) {
                return pool_workers_in(st, "echo", "leased") >= leased && pool_queued(st, "echo") >= queued;
            },
            "the greedy user's LEASEs to queue");
    }

    LoadOptions light = cycle_options(s, socket);
    light.clients = s.light;
    light.user_choice.users = s.light;
    light.user_choice.one_per_client = true;
    light.user_choice.prefix = "light";
    light.duration = s.duration;
    LoadResult light_result = run_load(light);

    std::vector<NamedResult> rows;
    std::string suffix = with_greedy ? " + greedy" : " alone";
    rows.push_back({"light x" + std::to_string(s.light) + suffix, std::move(light_result), {}});
    if (with_greedy) {
        stop_greedy = true;
        greedy_thread.join();
        rows.push_back({"greedy x" + std::to_string(s.greedy_leases), std::move(greedy_result), {}});
    }
    return rows;
}

} // namespace

int fairness_main(const std::vector<std::string>& args) {
    po::options_description desc(
        "foreman-bench fairness [OPTIONS]\n\n"
        "Light users (one client and one LEASE at a time each) lease from a shared pool,\n"
        "first alone, then next to a greedy user keeping --greedy-leases LEASEs held or\n"
        "queued; prints the light users' wait (LEASE sent -> OK) in both runs and the ratio.\n"
        "Each run starts its own foreman with a pool 'echo' of --workers foreman-echo workers.\n\n"
        "Options");
    FairnessSettings s;
    double duration = 5, hold_ms = 2;
    std::uint64_t think_ms = 0;
    int rounds = 1;
    desc.add_options()
        ("help,h", "this text")
        ("workers", po::value(&s.workers)->default_value(3), "workers in the pool")
        ("light", po::value(&s.light)->default_value(9), "light users, one client each")
        ("greedy-leases", po::value(&s.greedy_leases)->default_value(32),
         "LEASEs the greedy user keeps held or queued (one client each)")
        ("hold-ms", po::value(&hold_ms)->default_value(2), "each lease is held this long (the work)")
        ("think-ms", po::value(&think_ms)->default_value(0), "pause of each light user between its leases")
        ("duration,d", po::value(&duration)->default_value(5), "seconds the light users run, per run")
        ("wait-ms", po::value(&s.wait_ms)->default_value(60000), "LEASE wait_ms=")
        ("rounds", po::value(&rounds)->default_value(1),
         "repeat both runs this many times, in turns, and merge (a slow phase of a shared\n"
         "machine then hits both alike)")
        ("max-leases-per-user", po::value(&s.max_leases_per_user)->default_value(0),
         "the pool's max_leases_per_user (0: unlimited); the greedy user's refused LEASEs\n"
         "are retried after 10x --hold-ms")
        ("quick", "a short run (0.5 s per run), for the test suite");
    po::variables_map vm;
    po::store(po::command_line_parser(args).options(desc).run(), vm);
    po::notify(vm);
    if (vm.count("help")) {
        std::cout << desc << "\n";
        return 0;
    }
    if (vm.count("quick")) duration = 0.5;
    if (s.workers < 1 || s.light < 1) throw std::invalid_argument("--workers and --light must be at least 1");
    if (s.greedy_leases <= s.workers)
        throw std::invalid_argument("--greedy-leases must exceed --workers, or the greedy user queues nothing");
    if (rounds < 1) throw std::invalid_argument("--rounds must be at least 1");
    if (hold_ms < 0 || duration <= 0) throw std::invalid_argument("--hold-ms must be >= 0 and --duration > 0");
    s.hold = std::chrono::microseconds(static_cast<long>(hold_ms * 1000));
    s.think = std::chrono::milliseconds(think_ms);
    s.duration = std::chrono::milliseconds(static_cast<long>(duration * 1000));

    // Rows: light alone, light + greedy, greedy; rounds taken in turns, merged.
    std::vector<NamedResult> rows;
    for (int round = 0; round < rounds; ++round) {
        std::vector<NamedResult> these = run_setting(s, false);
        for (auto& row : run_setting(s, true)) these.push_back(std::move(row));
        for (std::size_t i = 0; i < these.size(); ++i) {
            if (round == 0) rows.push_back(std::move(these[i]));
            else rows[i].result.merge(these[i].result);
        }
    }

    std::printf("foreman-bench fairness: %d workers, %d light users, greedy user with %d LEASEs, hold %.1f ms, "
                "think %llu ms, max_leases_per_user %d, %.1f s per run, %d round(s)\n\n",
                s.workers, s.light, s.greedy_leases, hold_ms, static_cast<unsigned long long>(think_ms),
                s.max_leases_per_user, duration, rounds);
    print_table(stdout, rows);
    const Histogram& alone = rows[0].result.lease_wait;
    const Histogram& shared = rows[1].result.lease_wait;
    auto ratio = [](std::uint64_t a, std::uint64_t b) { return b > 0 ? static_cast<double>(a) / static_cast<double>(b) : 0; };
    double p50 = ratio(shared.percentile(0.5), alone.percentile(0.5));
    double p99 = ratio(shared.percentile(0.99), alone.percentile(0.99));
    double light_rate = rows[1].result.per_second(), greedy_rate = rows[2].result.per_second();
    std::printf("\nFAIRNESS (light users' wait next to the greedy user / alone)\n");
    std::printf("  light wait p50            %6.2fx (%.1f / %.1f us)\n", p50, us(shared.percentile(0.5)),
                us(alone.percentile(0.5)));
    std::printf("  light wait p99            %6.2fx (%.1f / %.1f us)   target <= 2x: %s\n", p99,
                us(shared.percentile(0.99)), us(alone.percentile(0.99)), p99 <= 2.0 ? "met" : "MISSED");
    std::printf("  greedy share of leases    %6.1f %% (%.0f of %.0f per s; a fair share is %.1f %%)\n",
                light_rate + greedy_rate > 0 ? 100.0 * greedy_rate / (light_rate + greedy_rate) : 0, greedy_rate,
                light_rate + greedy_rate, 100.0 / (s.light + 1));
    // The greedy user's `overloaded` refusals are max_leases_per_user at work.
    for (auto& row : rows) {
        std::uint64_t errors = row.result.error_count();
        if (&row == &rows[2] && row.result.errors.count("overloaded")) errors -= row.result.errors.at("overloaded");
        if (errors > 0) return 1;
    }
    return 0;
}

} // namespace foreman::bench
