// foreman-bench load: N clients, each looping LEASE -> request/response on
// the worker connection -> RELEASE, against a broker it starts (the echo
// worker pool below) or one it attaches to with --socket.

#include "bench/broker_process.hpp"
#include "bench/load_runner.hpp"
#include "bench/modes.hpp"
#include "bench/pool_status.hpp"
#include "bench/report.hpp"
#include "client/connection.hpp"

#include <boost/json.hpp>
#include <boost/program_options.hpp>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <stdexcept>
#include <thread>

namespace po = boost::program_options;

namespace foreman::bench {

namespace {

/// Spawns so far in pool `protocol`, from STATUS.
double workers_started(const std::string& socket, const std::string& protocol) {
    auto conn = client::Connection::connect(socket);
    auto status = conn.status();
    auto* pool = find_pool(status, protocol);
    if (!pool || !pool->contains("workers_started")) return 0;
    return static_cast<double>(pool->at("workers_started").to_number<std::int64_t>());
}

/// Waits until pool `protocol` has `n` idle workers (a started broker's min_idle).
void wait_idle(const std::string& socket, const std::string& protocol, int n) {
    auto conn = client::Connection::connect(socket);
    for (int tries = 0; tries < 6000; ++tries) {
        if (pool_workers_in(conn.status(), protocol, "idle") >= n) return;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    throw std::runtime_error("pool " + protocol + " did not reach " + std::to_string(n) + " idle workers");
}

/// "1", "1.1": a short decimal for labels.
std::string format_number(double x) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", x);
    return buf;
}

/// Adds a later round of the same setting to `into`: counts and CPU add up,
/// memory is the most seen.
void merge_rows(NamedResult& into, const NamedResult& more) {
    into.result.merge(more.result);
    for (auto& [key, value] : more.extra) {
        double& mine = into.extra[key];
        if (key == "broker_rss_mib") mine = std::max(mine, value);
        else if (key == "spawns" || key == "broker_cpu_s") mine += value;
    }
    if (into.extra.count("broker_cpu_s") && into.result.seconds > 0)
        into.extra["broker_cpu_pct"] = 100.0 * into.extra["broker_cpu_s"] / into.result.seconds;
}

/// Hit rate, warm-ups, and first-answer latency split by hit and miss.
void add_affinity_figures(NamedResult& row, bool greeted) {
    const LoadResult& r = row.result;
    row.extra["hit_pct"] = r.hit_percent();
    if (!greeted) return;
    std::uint64_t answered = r.first_answer_hit.count() + r.first_answer_miss.count();
    row.extra["cold_pct"] = answered > 0 ? 100.0 * static_cast<double>(r.cold) / static_cast<double>(answered) : 0;
    Histogram all;
    all.merge(r.first_answer_hit);
    all.merge(r.first_answer_miss);
    row.extra["first_p50_us"] = us(all.percentile(0.5));
    row.extra["first_p99_us"] = us(all.percentile(0.99));
    row.extra["hit_p50_us"] = us(r.first_answer_hit.percentile(0.5));
    row.extra["hit_p99_us"] = us(r.first_answer_hit.percentile(0.99));
    row.extra["miss_p50_us"] = us(r.first_answer_miss.percentile(0.5));
    row.extra["miss_p99_us"] = us(r.first_answer_miss.percentile(0.99));
}

/// The same user stream with and without user= in the LEASE: what affinity
/// changes in hit rate, warm-ups and the latency to the first answer.
void print_affinity_effect(std::FILE* out, const NamedResult& with, const NamedResult& without) {
    auto x = [&](const char* key) {
        double b = without.extra.at(key);
        return b > 0 ? with.extra.at(key) / b : 0;
    };
    std::fprintf(out, "\nAFFINITY (first row against second: same users, same seed, user= withheld)\n");
    std::fprintf(out, "  hit rate                 %6.1f %% vs %6.1f %%\n", with.extra.at("hit_pct"),
                 without.extra.at("hit_pct"));
    std::fprintf(out, "  warm-ups paid            %6.1f %% vs %6.1f %%\n", with.extra.at("cold_pct"),
                 without.extra.at("cold_pct"));
    std::fprintf(out, "  first answer p50         %6.2fx (%.1f / %.1f us)\n", x("first_p50_us"),
                 with.extra.at("first_p50_us"), without.extra.at("first_p50_us"));
    std::fprintf(out, "  first answer p99         %6.2fx (%.1f / %.1f us)\n", x("first_p99_us"),
                 with.extra.at("first_p99_us"), without.extra.at("first_p99_us"));
    std::fprintf(out, "  throughput               %6.2fx (%.0f / %.0f per s)\n",
                 without.result.per_second() > 0 ? with.result.per_second() / without.result.per_second() : 0,
                 with.result.per_second(), without.result.per_second());
}

} // namespace

int load_main(const std::vector<std::string>& args) {
    po::options_description desc("foreman-bench load [OPTIONS]\n\n"
                                 "N clients loop LEASE -> echo PAYLOAD bytes through the worker -> RELEASE.\n"
                                 "Without --socket it starts foreman with a pool 'echo' of foreman-echo workers.\n\n"
                                 "Options");
    int clients = 1, workers = 4, max_requests = 0, idle_clients = 0, holders = 0, heartbeat_ms = 0, threads = 0;
    int users = 0, remember = 1, rounds = 1;
    double duration = 10, zipf_s = 1.0;
    std::uint64_t count = 0, think_ms = 0, payload = 64, seed = 1, hold_us = 0;
    std::int64_t warmup_us = -1;
    std::string socket, protocol = "echo", notify = "none", user;
    std::uint64_t ttl_ms = 0, wait_ms = 0;
    desc.add_options()
        ("help,h", "this text")
        ("clients,c", po::value(&clients)->default_value(1), "concurrent clients, each on its own connection")
        ("duration,d", po::value(&duration)->default_value(10), "seconds to run (unless --count)")
        ("count,n", po::value(&count), "cycles to run in all, instead of a duration")
        ("payload", po::value(&payload)->default_value(64), "bytes echoed through the worker per cycle (0: none)")
        ("think-ms", po::value(&think_ms)->default_value(0), "pause of each client between its cycles")
        ("hold-us", po::value(&hold_us)->default_value(0), "each lease is held this long after its echo")
        ("protocol", po::value(&protocol)->default_value("echo"), "the pool to lease from")
        ("user", po::value(&user), "LEASE user=")
        ("users", po::value(&users)->default_value(0),
         "each cycle leases as one of N users u1..uN (user=), drawn from Zipf(--zipf);\n"
         "reports the affinity hit rate (the worker's pid last served that user)")
        ("zipf", po::value(&zipf_s)->default_value(1.0), "with --users: the Zipf exponent (0: uniform)")
        ("seed", po::value(&seed)->default_value(1), "with --users: client i's draws are seeded with seed + i")
        ("warmup-us", po::value(&warmup_us),
         "with --users: each cycle greets its worker with \"@user NAME\" and times the answer\n"
         "(latency split by affinity hit/miss); a started broker's workers run\n"
         "foreman-echo --warmup-us N (a user not remembered costs N us)")
        ("remember", po::value(&remember)->default_value(1),
         "started broker with --warmup-us: users whose state each worker keeps")
        ("no-affinity", "with --users: LEASE without user= (the worker is still greeted): the broker\n"
                        "cannot prefer the worker that last served the user")
        ("compare-affinity", "with --users: two rows, user= sent and withheld (--no-affinity), each\n"
                             "against a fresh broker when one is started")
        ("rounds", po::value(&rounds)->default_value(1),
         "run each row this many times, rows taken in turns, and merge (a slow phase of a\n"
         "shared machine then hits every row alike); --duration is per round")
        ("ttl-ms", po::value(&ttl_ms), "LEASE ttl_ms=")
        ("wait-ms", po::value(&wait_ms), "LEASE wait_ms=")
        ("socket", po::value(&socket), "attach to the broker at this control socket instead of starting one")
        ("workers", po::value(&workers)->default_value(4), "started broker: min_idle and max_instances of the pool")
        ("notify", po::value(&notify)->default_value("none"), "started broker: the pool's notify (none, foreman)")
        ("max-requests", po::value(&max_requests)->default_value(0),
         "started broker: the pool's max_requests (1: a fresh worker per lease, cold)")
        ("threads", po::value(&threads)->default_value(0), "started broker: its io threads (0: the number of cores)")
        ("heartbeat-ms", po::value(&heartbeat_ms)->default_value(0),
         "started broker: workers send WATCHDOG=1 this often while leased (notify=foreman,\n"
         "heartbeat_timeout_ms = 3x)")
        ("holders", po::value(&holders)->default_value(0),
         "leases taken before the run and held open through it (their workers heartbeat)")
        ("idle-clients", po::value(&idle_clients)->default_value(0),
         "control connections opened before the run and left idle through it")
        ("csv", "print CSV instead of the table")
        ("json", "print JSON instead of the table");
    po::variables_map vm;
    po::store(po::command_line_parser(args).options(desc).run(), vm);
    po::notify(vm);
    if (vm.count("help")) {
        std::cout << desc << "\n";
        return 0;
    }
    bool greet = vm.count("warmup-us") > 0;
    if (users < 0) throw std::invalid_argument("--users must be at least 0");
    if (users == 0 && (greet || vm.count("no-affinity") || vm.count("compare-affinity")))
        throw std::invalid_argument("--warmup-us, --no-affinity and --compare-affinity need --users");
    if (users > 0 && !user.empty()) throw std::invalid_argument("--user and --users exclude each other");
    if (greet && warmup_us < 0) throw std::invalid_argument("--warmup-us must be at least 0");
    if (remember < 1) throw std::invalid_argument("--remember must be at least 1");
    if (rounds < 1) throw std::invalid_argument("--rounds must be at least 1");

    // One row: a fresh broker when none is given, the load, its figures.
    auto run_row = [&](const std::string& label, bool tell_broker) {
        std::optional<ScratchDir> dir;
        std::optional<BrokerProcess> broker;
        std::string at = socket;
        if (at.empty()) {
            dir.emplace();
            std::string worker_args;
            if (heartbeat_ms > 0) worker_args += " --heartbeat-ms " + std::to_string(heartbeat_ms);
            if (greet)
                worker_args += " --warmup-us " + std::to_string(warmup_us) + " --remember " + std::to_string(remember);
            std::string pool = "[pool." + protocol + "]\npath = " + bin_dir() + "/foreman-echo\nmin_idle = " +
                               std::to_string(workers) + "\nmax_instances = " + std::to_string(workers) +
                               "\nmax_requests = " + std::to_string(max_requests) + "\nrecycle_jitter_pct = 0\n";
            if (!worker_args.empty()) pool += "args =" + worker_args + "\n";
            if (heartbeat_ms > 0)
                pool += "notify = foreman\nheartbeat_timeout_ms = " + std::to_string(3 * heartbeat_ms) + "\n";
            else
                pool += "notify = " + notify + "\n";
            broker.emplace(dir->path(), "max_clients = " + std::to_string(idle_clients + clients + 64) +
                                            "\nmax_workers = " + std::to_string(workers + 16) + "\n" +
                                            (threads > 0 ? "threads = " + std::to_string(threads) + "\n" : "") + pool);
            at = broker->socket();
            wait_idle(at, protocol, workers);
        }
        // Held leases and idle connections, for memory and heartbeat figures.
        std::optional<client::Connection> holder;
        std::vector<client::Lease> held;
        if (holders > 0) {
            holder.emplace(client::Connection::connect(at));
            client::LeaseOptions hold;
            hold.wait_ms = 30000;
            for (int i = 0; i < holders; ++i) held.push_back(holder->lease(protocol, hold));
        }
        std::optional<IdleClients> idle;
        if (idle_clients > 0) idle.emplace(at, idle_clients);

        LoadOptions o;
        o.socket = at;
        o.protocol = protocol;
        o.clients = clients;
        o.payload = payload;
        o.think = std::chrono::milliseconds(think_ms);
        o.hold = std::chrono::microseconds(hold_us);
        o.lease.user = user;
        o.user_choice.users = users;
        o.user_choice.zipf_s = zipf_s;
        o.user_choice.seed = seed;
        o.user_choice.tell_broker = tell_broker;
        o.greet_worker = greet;
        if (vm.count("ttl-ms")) o.lease.ttl_ms = ttl_ms;
        if (vm.count("wait-ms")) o.lease.wait_ms = wait_ms;
        if (vm.count("count")) o.count = count;
        else o.duration = std::chrono::milliseconds(static_cast<long>(duration * 1000));
        o.progress = [&](auto elapsed, std::uint64_t cycles, std::uint64_t errors) {
            progress_line(label, elapsed.count(), cycles, errors);
        };

        double spawns_before = workers_started(at, protocol);
        auto cpu_before = broker ? broker->cpu_time() : std::chrono::nanoseconds(0);
        LoadResult r = run_load(o);
        end_progress();
        NamedResult row{label, std::move(r), {}};
        row.extra["spawns"] = workers_started(at, protocol) - spawns_before;
        if (broker) {
            double cpu = std::chrono::duration<double>(broker->cpu_time() - cpu_before).count();
            row.extra["broker_cpu_s"] = cpu;
            row.extra["broker_cpu_pct"] = row.result.seconds > 0 ? 100.0 * cpu / row.result.seconds : 0;
            row.extra["broker_rss_mib"] = static_cast<double>(broker->rss_bytes()) / (1024.0 * 1024.0);
        }
        if (holders > 0) row.extra["held_leases"] = holders;
        if (idle) row.extra["idle_clients"] = static_cast<double>(idle->size());
        return row;
    };

    std::string label = "load " + protocol + " x" + std::to_string(clients);
    if (users > 0) label += " users=" + std::to_string(users) + " zipf=" + format_number(zipf_s);
    std::vector<std::pair<std::string, bool>> settings; // label, user= sent
    if (vm.count("compare-affinity")) {
        settings = {{label + " affinity", true}, {label + " no-affinity", false}};
    } else {
        bool tell = vm.count("no-affinity") == 0;
        settings = {{users > 0 ? label + (tell ? " affinity" : " no-affinity") : label, tell}};
    }
    std::vector<NamedResult> rows;
    for (int round = 0; round < rounds; ++round)
        for (std::size_t i = 0; i < settings.size(); ++i) {
            NamedResult row = run_row(settings[i].first, settings[i].second);
            if (round == 0) rows.push_back(std::move(row));
            else merge_rows(rows[i], row);
        }
    if (users > 0)
        for (auto& row : rows) add_affinity_figures(row, greet);
    if (vm.count("json")) std::cout << to_json(rows);
    else if (vm.count("csv")) std::cout << to_csv(rows);
    else {
        print_table(stdout, rows);
        if (rows.size() == 2 && greet) print_affinity_effect(stdout, rows[0], rows[1]);
    }
    for (auto& row : rows)
        if (row.result.error_count() > 0) return 1;
    return 0;
}

} // namespace foreman::bench
