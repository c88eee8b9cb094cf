// foreman-bench soak: many lease cycles with faults injected among them,
// against build/bin/foreman run as its own process; then checks that the
// broker came back to where it started: the same descriptors, the same
// memory give or take, no zombie child, no live lease, and every request
// answered. See bench/soak_faults.hpp for the faults.

#include "bench/broker_process.hpp"
#include "bench/load_runner.hpp"
#include "bench/modes.hpp"
#include "bench/report.hpp"
#include "bench/soak_broker_state.hpp"
#include "bench/soak_client.hpp"
#include "bench/soak_raw_control.hpp"

#include <boost/json.hpp>
#include <boost/program_options.hpp>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
#include <sys/wait.h>
#include <thread>

namespace po = boost::program_options;

namespace foreman::bench {

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

struct SoakOptions {
    SoakSetup setup;
    int clients = 64;
    int workers = 8;
    int plain_workers = 4;
    int heartbeat_ms = 100;
    std::uint64_t max_requests = 20000;
    double warmup_pct = 5;
    double rss_tolerance_pct = 5;
    double settle_s = 30;
};

std::string pool_config(const SoakOptions& o, const std::string& name, int workers, bool beating) {
    std::string c = "[pool." + name + "]\npath = " + bin_dir() + "/foreman-echo\n";
    if (beating)
        c += "args = --heartbeat-ms " + std::to_string(o.heartbeat_ms) +
             "\nnotify = foreman\nheartbeat_timeout_ms = " + std::to_string(o.setup.heartbeat_timeout.count()) + "\n";
    else
        c += "notify = none\n";
    c += "min_idle = " + std::to_string(workers) + "\nmax_instances = " + std::to_string(workers) +
         "\nmax_requests = " + std::to_string(o.max_requests) +
         "\nlease_ttl_ms = 60000\nkill_grace_ms = " + std::to_string(o.setup.kill_grace.count()) +
         "\nqueue_timeout_ms = 60000\n";
    return c;
}

double mib(std::size_t bytes) { return static_cast<double>(bytes) / (1024.0 * 1024.0); }

/// Before the figures the checks compare with are taken, every connection
/// thread of the broker serves once what it will serve during the run, so
/// that its one-time costs count as the start and not as growth: the
/// contexts' reactors open descriptors on first use, and a 64 KiB line buffer
/// sets the high-water mark of the thread's malloc arena (glibc keeps it
/// after the free, and the run's over-long lines would otherwise raise RSS
/// once, after warm-up, by a few hundred KiB: measured, not a leak). Then
/// returns the broker's descriptor count with no client connected but the
/// monitor.
int prime_broker(const std::string& socket, pid_t broker, int connections) {
    const auto deadline = Clock::now() + std::chrono::seconds(10);
    // Connections are dealt to the threads in turn: two rounds over at least
    // as many connections as the broker has threads reach each one twice
    // (glibc serves the first large buffer with mmap, later ones from the arena).
    for (int i = 0; i < 2 * thread_count(broker); ++i) {
        RawControl raw(socket);
        raw.send(protocol::version_line());
        bool answered = false;
        std::string why = raw.line(deadline) != "VERSION\tforeman\t1000"
                              ? "no VERSION line"
                              : over_long_line_refused(raw, protocol::max_line_length + 1, deadline, answered);
        if (!why.empty()) throw std::runtime_error("priming the broker: " + why);
    }
    int with;
    {
        IdleClients idle(socket, connections); // each answered VERSION: the broker holds them all
        with = open_fd_count(broker);
    }
    const int without = with - connections;
    int now = open_fd_count(broker);
    while (now != without && Clock::now() < deadline) {
        std::this_thread::sleep_for(milliseconds(5));
        now = open_fd_count(broker);
    }
    return now;
}

struct Check {
    std::string name;
    bool ok;
    std::string figure; ///< what was measured
    std::string reason; ///< one line, when it failed
};

} // namespace

int soak_main(const std::vector<std::string>& args) {
    po::options_description desc(
        "foreman-bench soak [OPTIONS]\n\n"
        "Starts foreman with two foreman-echo pools (soak: notify=foreman with heartbeats; plain: notify=none)\n"
        "and runs --cycles lease cycles (LEASE -> echo -> close -> RELEASE) from --clients threads, one fault\n"
        "every --fault-every cycles: clients closing or SIGKILLed while holding leases, detached leases\n"
        "abandoned to their ttl, leased workers SIGKILLed or SIGSTOPped, garbage and over-long lines, RENEW and\n"
        "RELEASE of unknown leases. Then, once the pools are idle again, checks the broker's descriptors\n"
        "(same as at the start), RSS (within tolerance of after warm-up), zombie children and live leases\n"
        "(none), and that every request was answered. Exit status 1 when a check fails.\n\n"
        "Options");
    SoakOptions o;
    std::uint64_t heartbeat_timeout = 1000, kill_grace = 500, detached_ttl = 500, prompt = 3000;
    std::string keep_log, fault_list;
    desc.add_options()
        ("help,h", "this text")
        ("cycles,n", po::value(&o.setup.cycles)->default_value(1'000'000), "lease cycles in all")
        ("clients,c", po::value(&o.clients)->default_value(64), "client threads, each on its own connection")
        ("seed", po::value(&o.setup.seed)->default_value(1), "draws the faults and their details")
        ("fault-every", po::value(&o.setup.fault_every)->default_value(1000), "one fault per this many cycles (0: none)")
        ("faults", po::value(&fault_list),
         "only these kinds, comma-separated: session-close, client-kill, detached-ttl, worker-kill,\n"
         "worker-stop, garbage, unknown-lease (default: all)")
        ("workers", po::value(&o.workers)->default_value(8), "workers of the soak pool (notify=foreman)")
        ("plain-workers", po::value(&o.plain_workers)->default_value(4), "workers of the plain pool (notify=none)")
        ("plain-every", po::value(&o.setup.plain_every)->default_value(4),
         "every Nth cycle leases from the plain pool (0: never)")
        ("max-requests", po::value(&o.max_requests)->default_value(20000),
         "the pools' max_requests: workers are recycled along the way (0: never)")
        ("heartbeat-ms", po::value(&o.heartbeat_ms)->default_value(100), "soak workers' WATCHDOG=1 interval")
        ("heartbeat-timeout-ms", po::value(&heartbeat_timeout)->default_value(1000), "the soak pool's heartbeat_timeout_ms")
        ("kill-grace-ms", po::value(&kill_grace)->default_value(500), "the pools' kill_grace_ms")
        ("detached-ttl-ms", po::value(&detached_ttl)->default_value(500), "ttl_ms of the abandoned detached leases")
        ("prompt-ms", po::value(&prompt)->default_value(3000),
         "how soon a lease must end once its holder's connection closed, or its worker died")
        ("payload", po::value(&o.setup.payload)->default_value(64), "bytes echoed per cycle")
        ("warmup-pct", po::value(&o.warmup_pct)->default_value(5), "RSS is taken after this share of the cycles...")
        ("rss-tolerance-pct", po::value(&o.rss_tolerance_pct)->default_value(5), "...and may differ by this much at the end")
        ("settle-s", po::value(&o.settle_s)->default_value(30), "how long the broker may take to come back to rest")
        ("keep-log", po::value(&keep_log), "copy the broker's log (foreman.log) here")
        ("json", "print JSON instead of text")
        ("quick", "a small run of a second or two, every fault kind included: a smoke test");
    po::variables_map vm;
    po::store(po::command_line_parser(args).options(desc).run(), vm);
    po::notify(vm);
    if (vm.count("help")) {
        std::cout << desc << "\n";
        return 0;
    }
    if (vm.count("quick")) {
        auto unset = [&](const char* name) { return vm[name].defaulted(); };
        if (unset("cycles")) o.setup.cycles = 3000;
        if (unset("clients")) o.clients = 8;
        if (unset("fault-every")) o.setup.fault_every = 75;
        if (unset("workers")) o.workers = 4;
        if (unset("plain-workers")) o.plain_workers = 2;
        if (unset("max-requests")) o.max_requests = 300;
        // Short enough for a quick worker-stop, long enough that a worker
        // starved by a loaded machine is not taken for hung.
        if (unset("heartbeat-ms")) o.heartbeat_ms = 50;
        if (unset("heartbeat-timeout-ms")) heartbeat_timeout = 500;
        if (unset("kill-grace-ms")) kill_grace = 100;
        if (unset("detached-ttl-ms")) detached_ttl = 150;
        if (unset("warmup-pct")) o.warmup_pct = 20;
    }
    if (o.clients < 1 || o.workers < 1 || o.plain_workers < 1 || o.heartbeat_ms < 1 || o.setup.cycles < 1)
        throw po::error("--cycles, --clients, --workers, --plain-workers and --heartbeat-ms must be at least 1");
    if (detached_ttl < 100) throw po::error("--detached-ttl-ms must be at least 100 (the protocol's minimum ttl)");
    if (o.warmup_pct < 0 || o.warmup_pct >= 100) throw po::error("--warmup-pct must be in 0..100");
    if (vm.count("faults")) {
        try {
            o.setup.faults = parse_soak_faults(fault_list);
        } catch (const std::invalid_argument& e) {
            throw po::error(std::string("--faults: ") + e.what());
        }
    }
    o.setup.heartbeat_timeout = milliseconds(heartbeat_timeout);
    o.setup.kill_grace = milliseconds(kill_grace);
    o.setup.detached_ttl = milliseconds(detached_ttl);
    o.setup.prompt = milliseconds(prompt);
    const bool json = vm.count("json") != 0;

    ScratchDir dir;
    BrokerProcess broker(dir.path(), "max_clients = " + std::to_string(2 * o.clients + 64) +
                                         "\nmax_workers = " + std::to_string(o.workers + o.plain_workers + 16) + "\n" +
                                         pool_config(o, o.setup.pool, o.workers, true) +
                                         pool_config(o, o.setup.plain_pool, o.plain_workers, false));
    o.setup.socket = broker.socket();
    const pid_t pid = broker.pid();
    const std::map<std::string, int> rest{{o.setup.pool, o.workers}, {o.setup.plain_pool, o.plain_workers}};

    // One connection watches from start to end, so both descriptor counts include it.
    auto monitor = client::Connection::connect(o.setup.socket);
    auto ready = wait_at_rest(monitor, pid, rest, std::nullopt, milliseconds(20000));
    if (!ready.at_rest) throw std::runtime_error("the pools did not come up idle in 20 s");
    const int fds_start = prime_broker(o.setup.socket, pid, o.clients);
    if (!json)
        std::fprintf(stderr,
                     "foreman-bench soak: %llu cycles, %d clients, seed %llu, one fault per %llu cycles; pools %s (%d "
                     "workers, notify=foreman, heartbeat %d/%llu ms) and %s (%d, notify=none); broker pid %d, %d fds\n",
                     static_cast<unsigned long long>(o.setup.cycles), o.clients,
                     static_cast<unsigned long long>(o.setup.seed),
                     static_cast<unsigned long long>(o.setup.fault_every), o.setup.pool.c_str(), o.workers,
                     o.heartbeat_ms, static_cast<unsigned long long>(heartbeat_timeout), o.setup.plain_pool.c_str(),
                     o.plain_workers, static_cast<int>(pid), fds_start);

    // ---- the run ----------------------------------------------------------------
    SoakShared shared;
    std::vector<SoakTally> tallies(static_cast<std::size_t>(o.clients));
    std::vector<std::thread> threads;
    const auto t0 = Clock::now();
    for (auto& t : tallies)
        threads.emplace_back([&o, &shared, &t] {
            SoakClient(o.setup, shared, t).run();
            ++shared.finished;
        });
    const auto warm_cycles = static_cast<std::uint64_t>(static_cast<double>(o.setup.cycles) * o.warmup_pct / 100.0);
    std::size_t rss_warm = 0;
    std::uint64_t next_tenth = 1;
    bool broker_died = false;
    for (;;) {
        const bool spent = shared.finished.load() == o.clients; // read first: `done` is then final
        const std::uint64_t done = shared.done.load();
        if (!rss_warm && done >= std::max<std::uint64_t>(warm_cycles, 1)) rss_warm = broker.rss_bytes();
        while (next_tenth <= 10 && done >= o.setup.cycles * next_tenth / 10) {
            const double s = std::chrono::duration<double>(Clock::now() - t0).count();
            if (!json)
                std::fprintf(stderr, "soak: %3llu%% %10llu cycles %8.1f s %8.0f/s, faults %llu (%llu failed)\n",
                             static_cast<unsigned long long>(next_tenth * 10), static_cast<unsigned long long>(done),
                             s, static_cast<double>(done) / s, static_cast<unsigned long long>(shared.faults.load()),
                             static_cast<unsigned long long>(shared.faults_failed.load()));
            ++next_tenth;
        }
        if (spent) break; // every client has taken its last turn
        if (has_exited(pid)) {
            broker_died = true;
            shared.stop = true;
            break;
        }
        std::this_thread::sleep_for(milliseconds(50));
    }
    for (auto& t : threads) t.join();
    const double wall = std::chrono::duration<double>(Clock::now() - t0).count();
    SoakTally all;
    for (auto& t : tallies) all.merge(t);
    if (!rss_warm) rss_warm = broker.rss_bytes();

    // ---- back at rest? ------------------------------------------------------------
    RestState end;
    if (!broker_died)
        end = wait_at_rest(monitor, pid, rest, fds_start, milliseconds(static_cast<long>(o.settle_s * 1000)));
    const std::size_t rss_end = broker_died ? 0 : broker.rss_bytes();
    const double rss_pct = rss_warm ? 100.0 * (static_cast<double>(rss_end) - static_cast<double>(rss_warm)) /
                                          static_cast<double>(rss_warm)
                                    : 0;
    std::uint64_t faults = 0, faults_failed = 0;
    for (auto& f : all.faults) {
        faults += f.injected;
        faults_failed += f.failed;
    }
    std::uint64_t cycle_errors = 0, odd_expiries = 0;
    for (auto& [k, n] : all.cycle_errors) cycle_errors += n;
    for (auto& [reason, n] : all.expired)
        if (reason != "worker-ready") odd_expiries += n;
    const std::uint64_t unanswered = all.requests - all.answered;

    // Stopped before the checks: a clean exit (status 0, every worker reaped)
    // is one of them, and under ASan it is where leaks are reported.
    const int broker_exit = broker_died ? -1 : broker.stop();
    if (!keep_log.empty())
        std::filesystem::copy_file(broker.log_path(), keep_log, std::filesystem::copy_options::overwrite_existing);
    const bool exited_0 = WIFEXITED(broker_exit) && WEXITSTATUS(broker_exit) == 0;
    auto num = [](auto v) { return std::to_string(v); };
    char rss_text[160];
    std::snprintf(rss_text, sizeof rss_text, "after warm-up %.2f MiB, end %.2f MiB: %+.2f %% (limit %g %%)",
                  mib(rss_warm), mib(rss_end), rss_pct, o.rss_tolerance_pct);
    std::vector<Check> checks{
        {"broker alive", !broker_died, broker_died ? "exited during the run" : "running", "the broker exited during the run"},
        {"broker fds", end.fds == fds_start, "start " + num(fds_start) + ", end " + num(end.fds),
         "broker descriptors: " + num(end.fds) + " at the end, " + num(fds_start) + " at the start"},
        {"broker RSS", std::fabs(rss_pct) <= o.rss_tolerance_pct, rss_text,
         std::string("broker RSS ") + rss_text},
        {"zombies", end.zombies.empty(), num(end.zombies.size()),
         num(end.zombies.size()) + " child(ren) of the broker left unreaped (state Z)"},
        {"live leases", end.pools.leased == 0 && end.pools.queued == 0,
         num(end.pools.leased) + " leased, " + num(end.pools.queued) + " queued",
         "STATUS at the end: " + num(end.pools.leased) + " leased workers, " + num(end.pools.queued) + " queued LEASEs"},
        {"at rest", end.at_rest,
         (end.at_rest ? "after " : "not after ") + num(static_cast<long>(end.waited.count() * 1000)) + " ms",
         "the pools did not return to " + num(o.workers) + " + " + num(o.plain_workers) + " idle workers (" +
             num(end.pools.starting) + " starting, " + num(end.pools.stopping) + " stopping)"},
        {"unanswered", unanswered == 0, num(all.requests) + " sent, " + num(all.answered) + " answered",
         num(unanswered) + " requests got no answer (" + num(all.broken_connections) + " connections broke)"},
        {"faults", faults_failed == 0, num(faults) + " injected, " + num(faults_failed) + " not handled as specified",
         num(faults_failed) + " faults were not handled as specified (first ones below)"},
        {"cycle errors", cycle_errors == 0 && all.cycles == o.setup.cycles,
         num(all.cycles) + " cycles done, " + num(cycle_errors) + " failed",
         num(cycle_errors) + " ordinary cycles failed, " + num(all.cycles) + " of " + num(o.setup.cycles) + " done"},
        {"odd expiries", odd_expiries == 0, num(odd_expiries),
         num(odd_expiries) + " ordinary cycles' leases EXPIRED other than worker-ready"},
        {"broker exit", exited_0, "status " + num(broker_exit) + " on SIGTERM",
         "the broker's wait status on SIGTERM was " + num(broker_exit) + ", not exit 0 (see its log)"},
    };
    // A dead broker makes every other check meaningless: say only that.
    if (broker_died) checks.resize(1);
    bool pass = true;
    for (auto& c : checks) pass = pass && c.ok;

    const double rate = wall > 0 ? static_cast<double>(all.cycles) / wall : 0;

    if (json) {
        boost::json::object j;
        j["cycles"] = all.cycles;
        j["clients"] = o.clients;
        j["seed"] = o.setup.seed;
        j["fault_every"] = o.setup.fault_every;
        j["wall_s"] = wall;
        j["cycles_per_s"] = rate;
        j["cycle_p50_us"] = us(all.cycle.percentile(0.5));
        j["cycle_p99_us"] = us(all.cycle.percentile(0.99));
        j["cycle_max_us"] = us(all.cycle.max());
        boost::json::object fj;
        for (auto k : soak_fault_kinds) {
            auto& f = all.faults[static_cast<std::size_t>(k)];
            fj[soak_fault_name(k)] = {{"injected", f.injected}, {"failed", f.failed}};
        }
        j["faults"] = std::move(fj);
        j["requests"] = all.requests;
        j["answered"] = all.answered;
        j["unanswered"] = unanswered;
        boost::json::object ej, cj;
        for (auto& [k, n] : all.expired) ej[k] = n;
        for (auto& [k, n] : all.cycle_errors) cj[k] = n;
        j["expired"] = std::move(ej);
        j["cycle_errors"] = std::move(cj);
        j["fds_start"] = fds_start;
        j["fds_end"] = end.fds;
        j["rss_warm_bytes"] = rss_warm;
        j["rss_end_bytes"] = rss_end;
        j["rss_change_pct"] = rss_pct;
        j["zombies"] = end.zombies.size();
        j["leased_end"] = end.pools.leased;
        j["queued_end"] = end.pools.queued;
        j["settle_ms"] = end.waited.count() * 1000;
        j["broker_exit_status"] = broker_exit;
        boost::json::array failed, notes;
        for (auto& c : checks)
            if (!c.ok) failed.push_back(boost::json::value(c.reason));
        for (auto& f : all.failures) notes.push_back(boost::json::value(f));
        j["failed_checks"] = std::move(failed);
        j["failures"] = std::move(notes);
        j["pass"] = pass;
        std::cout << boost::json::serialize(j) << "\n";
    } else {
        std::printf("cycles        %llu in %.1f s: %.0f cycles/s; cycle p50 %.1f us, p99 %.1f us, max %.1f us\n",
                    static_cast<unsigned long long>(all.cycles), wall, rate, us(all.cycle.percentile(0.5)),
                    us(all.cycle.percentile(0.99)), us(all.cycle.max()));
        std::printf("faults        %llu:", static_cast<unsigned long long>(faults));
        for (auto k : soak_fault_kinds) {
            auto& f = all.faults[static_cast<std::size_t>(k)];
            std::printf(" %s %llu", std::string(soak_fault_name(k)).c_str(), static_cast<unsigned long long>(f.injected));
            if (f.failed) std::printf(" (%llu FAILED)", static_cast<unsigned long long>(f.failed));
        }
        std::printf("\nexpired       ");
        for (auto& [k, n] : all.expired) std::printf("%s %llu  ", k.c_str(), static_cast<unsigned long long>(n));
        std::printf("(ordinary cycles)\n");
        for (auto& c : checks)
            std::printf("%-13s %-60s %s\n", c.name.c_str(), c.figure.c_str(), c.ok ? "ok" : "FAILED");
        for (auto& f : all.failures) std::printf("  failure: %s\n", f.c_str());
        for (auto& c : checks)
            if (!c.ok) std::printf("soak: FAIL: %s\n", c.reason.c_str());
        std::printf("soak: %s\n", pass ? "PASS" : "FAIL");
    }
    return pass ? 0 : 1;
}

} // namespace foreman::bench
