// foreman-bench compare: the same echo work (PAYLOAD bytes to a foreman-echo
// process and back, per cycle) through
//   raw      the ideal lease broker (RawBroker, in process) and warm workers,
//   spawn    a spawn-per-connection server (s6-ipcserver), what operators
//            use instead of a broker,
//   cold     foreman starting a fresh worker for every lease (max_requests=1),
//   warm     foreman with a pool of N ready workers,
// each serially (1 client) and with N clients, then the ratios issue 5's
// targets are stated in.

#include "bench/broker_process.hpp"
#include "bench/load_runner.hpp"
#include "bench/modes.hpp"
#include "bench/raw_broker.hpp"
#include "bench/report.hpp"
#include "bench/spawn_server.hpp"
#include "client/connection.hpp"

#include <boost/json.hpp>
#include <boost/program_options.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <optional>
#include <sstream>
#include <thread>
#include <unistd.h>

namespace po = boost::program_options;

namespace foreman::bench {

namespace {

using Clock = std::chrono::steady_clock;

/// What every row shares.
struct Settings {
    int clients = 64;
    std::chrono::milliseconds duration{5000};
    std::size_t payload = 64;
};

/// Runs one row and adds its machine-wide CPU cost per cycle.
NamedResult run_row(const std::string& name, LoadOptions o, const Settings& s) {
    o.duration = s.duration;
    o.payload = s.payload;
    o.progress = [&](auto elapsed, std::uint64_t cycles, std::uint64_t errors) {
        progress_line(name, elapsed.count(), cycles, errors);
    };
    auto busy_before = machine_busy_time();
    auto switches_before = machine_context_switches();
    LoadResult r = run_load(o);
    auto busy = machine_busy_time() - busy_before;
    auto switches = machine_context_switches() - switches_before;
    end_progress();
    NamedResult row{name, std::move(r), {}};
    if (row.result.cycles > 0)
        row.extra["cpu_us/cycle"] =
            std::chrono::duration<double, std::micro>(busy).count() / static_cast<double>(row.result.cycles);
    if (row.result.cycles > 0)
        row.extra["ctxsw/cycle"] = static_cast<double>(switches) / static_cast<double>(row.result.cycles);
    return row;
}

/// Spawns so far and idle workers in pool `protocol`, from STATUS.
struct PoolCounts {
    double started = 0;
    int idle = 0;
};
PoolCounts pool_counts(const std::string& socket, const std::string& protocol) {
    auto conn = client::Connection::connect(socket);
    auto status = conn.status();
    PoolCounts c;
    for (auto& pool : status.at("pools").as_array()) {
        if (pool.at("protocol").as_string() != protocol) continue;
        if (auto* s = pool.as_object().if_contains("workers_started")) c.started = static_cast<double>(s->to_number<std::int64_t>());
        for (auto& w : pool.at("workers").as_array())
            if (w.at("state").as_string() == "idle") ++c.idle;
    }
    return c;
}

/// The foreman rows of one pool configuration: serial, then N clients.
void foreman_rows(std::vector<NamedResult>& rows, const std::string& what, const std::string& pool_keys,
                  int wait_idle, int max_workers, const Settings& s) {
    ScratchDir dir;
    BrokerProcess broker(dir.path(), "max_clients = 20000\nmax_workers = " + std::to_string(max_workers) +
                                         "\n[pool.echo]\npath = " + bin_dir() +
                                         "/foreman-echo\nnotify = none\nrecycle_jitter_pct = 0\n" + pool_keys);
    // A warm pool is measured once all its workers are ready.
    for (auto deadline = Clock::now() + std::chrono::seconds(20);
         pool_counts(broker.socket(), "echo").idle < wait_idle;) {
        if (Clock::now() > deadline) throw std::runtime_error(what + ": workers not idle within 20 s");
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    for (int clients : {1, s.clients}) {
        LoadOptions o;
        o.kind = CycleKind::lease;
        o.socket = broker.socket();
        o.clients = clients;
        double spawns_before = pool_counts(broker.socket(), "echo").started;
        auto cpu_before = broker.cpu_time();
        NamedResult row = run_row(what + " x" + std::to_string(clients), o, s);
        row.extra["spawns"] = pool_counts(broker.socket(), "echo").started - spawns_before;
        row.extra["server_cpu_s"] = std::chrono::duration<double>(broker.cpu_time() - cpu_before).count();
        rows.push_back(std::move(row));
    }
}

/// The spawn-per-connection rows of one server: serial, then N clients.
void spawn_rows(std::vector<NamedResult>& rows, SpawnServerKind kind, const Settings& s) {
    ScratchDir dir;
    SpawnServer server(kind, dir.path() + "/echo.sock", bin_dir() + "/foreman-echo", dir.path() + "/server.log",
                       std::max(40, 2 * s.clients));
    for (int clients : {1, s.clients}) {
        LoadOptions o;
        o.kind = CycleKind::connect;
        o.socket = server.socket();
        o.clients = clients;
        auto cpu_before = server.cpu_time();
        NamedResult row = run_row(std::string("spawn ") + to_string(kind) + " x" + std::to_string(clients), o, s);
        row.extra["spawns"] = static_cast<double>(row.result.cycles);
        row.extra["server_cpu_s"] = std::chrono::duration<double>(server.cpu_time() - cpu_before).count();
        rows.push_back(std::move(row));
    }
}

/// The raw ideal rows: serial (1 client, 1 worker), then N clients on N workers.
void raw_rows(std::vector<NamedResult>& rows, const Settings& s) {
    ScratchDir dir;
    EchoWorkers workers(bin_dir() + "/foreman-echo", dir.path(), s.clients);
    RawBroker raw(dir.path() + "/raw.sock", workers.sockets());
    for (int clients : {1, s.clients}) {
        LoadOptions o;
        o.kind = CycleKind::lease;
        o.socket = raw.socket();
        o.clients = clients;
        rows.push_back(run_row("raw x" + std::to_string(clients), o, s));
    }
}

/// One ratio of issue 5, with its target when it has one.
struct Ratio {
    std::string key;   ///< JSON name
    std::string text;  ///< what it divides, for people
    double value = NAN;
    std::string op;    ///< "<=", ">=" or empty (no target)
    double target = 0;
    std::string goal;  ///< the goal beyond the target, for people
    bool met() const { return op == "<=" ? value <= target : op == ">=" ? value >= target : true; }
};

std::string load_average() {
    double l[3] = {0, 0, 0};
    if (::getloadavg(l, 3) != 3) return "?";
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.2f %.2f %.2f", l[0], l[1], l[2]);
    return buf;
}

} // namespace

int compare_main(const std::vector<std::string>& args) {
    po::options_description desc(
        "foreman-bench compare [OPTIONS]\n\n"
        "The same echo work through a raw ideal broker, a spawn-per-connection server, and\n"
        "foreman cold and warm, each with 1 client and with N; then the ratios issue 5 sets\n"
        "targets for. foreman runs as a process of its own (build/bin/foreman).\n\n"
        "Options");
    int clients = 64;
    double duration = 5;
    std::size_t payload = 64;
    std::string peer = "s6";
    desc.add_options()
        ("help,h", "this text")
        ("clients,c", po::value(&clients)->default_value(64), "N: concurrent clients of the N-client rows (and N workers)")
        ("duration,d", po::value(&duration)->default_value(5), "seconds per row")
        ("payload", po::value(&payload)->default_value(64), "bytes echoed through the worker per cycle")
        ("peer", po::value(&peer)->default_value("s6"),
         "the spawn-per-connection peer of the ratios: s6 (s6-ipcserver) or systemd (systemd-socket-activate)")
        ("all-peers", "measure the other spawn-per-connection server too (rows only)")
        ("only", po::value<std::string>(),
         "comma-separated subset of raw,spawn,cold,warm to measure (for profiling one of them;\n"
         "ratios whose rows are missing are n/a)")
        ("quick", "about 1 s in all: 0.1 s rows, N=4 (unless --clients); for the smoke test")
        ("csv", "print CSV instead of the table: the rows, a blank line, the ratios")
        ("json", "print JSON instead of the table: {\"rows\": [...], \"ratios\": {...}, ...}");
    po::variables_map vm;
    po::store(po::command_line_parser(args).options(desc).run(), vm);
    po::notify(vm);
    if (vm.count("help")) {
        std::cout << desc << "\n";
        return 0;
    }
    if (vm.count("quick")) {
        if (vm["clients"].defaulted()) clients = 4;
        if (vm["duration"].defaulted()) duration = 0.1;
    }
    if (clients < 1) throw std::invalid_argument("--clients must be at least 1");
    if (duration <= 0) throw std::invalid_argument("--duration must be positive");
    if (payload < 1) throw std::invalid_argument("--payload must be at least 1 (the echo is the work)");
    SpawnServerKind the_peer;
    if (peer == "s6") the_peer = SpawnServerKind::s6_ipcserver;
    else if (peer == "systemd") the_peer = SpawnServerKind::systemd_socket_activate;
    else throw std::invalid_argument("--peer must be s6 or systemd");
    const SpawnServerKind other_peer = the_peer == SpawnServerKind::s6_ipcserver
                                           ? SpawnServerKind::systemd_socket_activate
                                           : SpawnServerKind::s6_ipcserver;

    Settings s;
    s.clients = clients;
    s.duration = std::chrono::milliseconds(static_cast<long>(duration * 1000));
    s.payload = payload;
    const std::string n = std::to_string(clients);
    const std::string load_before = load_average();

    std::string only = vm.count("only") ? "," + vm["only"].as<std::string>() + "," : ",raw,spawn,cold,warm,";
    auto wanted = [&](const char* what) { return only.find("," + std::string(what) + ",") != std::string::npos; };
    std::vector<NamedResult> rows;
    if (wanted("raw")) raw_rows(rows, s);
    if (wanted("spawn")) spawn_rows(rows, the_peer, s);
    if (wanted("spawn") && vm.count("all-peers")) spawn_rows(rows, other_peer, s);
    // Cold: every lease starts a worker; retired workers hold their slot
    // until reaped, so twice N slots keep N clients from waiting on reaping.
    if (wanted("cold"))
        foreman_rows(rows, "foreman cold",
                 "min_idle = 0\nmax_instances = " + std::to_string(2 * clients) + "\nmax_requests = 1\n", 0,
                 std::max(256, 4 * clients), s);
    if (wanted("warm"))
        foreman_rows(rows, "foreman warm",
                 "min_idle = " + n + "\nmax_instances = " + n + "\nmax_requests = 0\n", clients,
                 std::max(256, 4 * clients), s);
    const std::string load_after = load_average();

    const LoadResult none; // a row not measured: no cycles, so its ratios are n/a
    auto find = [&](const std::string& name) -> const LoadResult& {
        for (auto& r : rows)
            if (r.name == name) return r.result;
        return none;
    };
    const std::string peer_name = std::string("spawn ") + to_string(the_peer);
    const LoadResult& raw1 = find("raw x1");
    const LoadResult& rawN = find("raw x" + n);
    const LoadResult& spawn1 = find(peer_name + " x1");
    const LoadResult& spawnN = find(peer_name + " x" + n);
    const LoadResult& cold1 = find("foreman cold x1");
    const LoadResult& coldN = find("foreman cold x" + n);
    const LoadResult& warm1 = find("foreman warm x1");
    const LoadResult& warmN = find("foreman warm x" + n);
    auto div = [](double a, double b) { return a > 0 && b > 0 ? a / b : NAN; };
    auto median = [](const LoadResult& r) { return static_cast<double>(r.cycle.percentile(0.5)); };
    const std::string xn = " x" + n;
    std::vector<Ratio> ratios = {
        {"warm_serial_median_over_raw", "warm x1 median / raw x1 median", div(median(warm1), median(raw1)), "<=", 1.5,
         "goal 1.0x"},
        {"warm_throughput_over_raw", "warm" + xn + " per s / raw" + xn + " per s",
         div(warmN.per_second(), rawN.per_second()), ">=", 0.8, ""},
        {"warm_throughput_over_spawn", "warm" + xn + " per s / spawn" + xn + " per s",
         div(warmN.per_second(), spawnN.per_second()), ">=", 20, ""},
        {"warm_serial_over_spawn", "warm x1 per s / spawn x1 per s", div(warm1.per_second(), spawn1.per_second()),
         "", 0, ""},
        {"spawn_serial_median_over_warm", "spawn x1 median / warm x1 median", div(median(spawn1), median(warm1)), "",
         0, ""},
        {"cold_serial_median_over_warm", "cold x1 median / warm x1 median", div(median(cold1), median(warm1)), "", 0,
         ""},
        {"warm_throughput_over_cold", "warm" + xn + " per s / cold" + xn + " per s",
         div(warmN.per_second(), coldN.per_second()), "", 0, ""},
        {"cold_serial_median_over_spawn", "cold x1 median / spawn x1 median", div(median(cold1), median(spawn1)), "",
         0, ""},
        {"cold_throughput_over_spawn", "cold" + xn + " per s / spawn" + xn + " per s",
         div(coldN.per_second(), spawnN.per_second()), "", 0, ""},
    };

    std::vector<std::string> notes = {
        std::string("spawn-per-connection peer: ") + to_string(the_peer) +
            (the_peer == SpawnServerKind::s6_ipcserver
                 ? " -c C -C C SOCKET foreman-echo --stdio, C = max(40, 2N) = " +
                       std::to_string(std::max(40, 2 * clients)) +
                       " (its defaults, 40 connections in all and 40 per uid, would queue N=64 clients in the "
                       "backlog). s6-ipcserver is a production super-server built for exactly this (fork+exec "
                       "per connection, connection limits, reaping); systemd-socket-activate --accept also "
                       "runs here, but its manual calls it a tool for testing socket activation (--all-peers "
                       "adds its rows)."
                 : " --accept -l SOCKET foreman-echo (no connection limit; its manual calls it a test tool)"),
        "raw: in-process RawBroker (a thread per client connection, blocking calls, connect()s the "
        "worker socket per LEASE and passes it) and N foreman-echo workers (listen=path); serial uses 1 worker",
        "foreman: build/bin/foreman as a process of its own (log level warning), pool echo of foreman-echo, "
        "listen=activation, notify=none, recycle_jitter_pct=0; cold: max_requests=1, min_idle=0, "
        "max_instances=2N; warm: min_idle=max_instances=N, measured once all N are idle",
        "cycle: lease rows LEASE -> fd -> echo -> close -> RELEASE acknowledged; spawn rows connect() -> echo "
        "-> close. cpu_us/cycle, ctxsw/cycle: CPU busy on all cores and context switches (/proc/stat) per "
        "cycle, load generator and workers included; "
        "server_cpu_s: the broker's (or super-server's) own CPU time in the row",
    };

    if (vm.count("json")) {
        namespace json = boost::json;
        json::object out;
        out["settings"] = {{"clients", clients}, {"duration_s", duration}, {"payload", payload},
                           {"peer", to_string(the_peer)}, {"cores", std::thread::hardware_concurrency()},
                           {"load_before", load_before}, {"load_after", load_after}};
        out["rows"] = json::parse(to_json(rows));
        json::object r, targets;
        for (auto& x : ratios) {
            r[x.key] = std::isnan(x.value) ? json::value(nullptr) : json::value(x.value);
            if (!x.op.empty())
                targets[x.key] = {{"op", x.op}, {"target", x.target},
                                  {"met", std::isnan(x.value) ? json::value(nullptr) : json::value(x.met())}};
        }
        out["ratios"] = std::move(r);
        out["targets"] = std::move(targets);
        json::array ns;
        for (auto& note : notes) ns.emplace_back(note);
        out["notes"] = std::move(ns);
        std::cout << json::serialize(out) << "\n";
    } else if (vm.count("csv")) {
        std::cout << to_csv(rows) << "\nratio,value,target,met\n";
        for (auto& x : ratios)
            std::cout << x.key << "," << (std::isnan(x.value) ? std::string() : std::to_string(x.value)) << "," << (x.op.empty() ? "" : x.op + (std::ostringstream() << x.target).str()) << ","
                      << (x.op.empty() || std::isnan(x.value) ? "" : x.met() ? "yes" : "no") << "\n";
    } else {
        std::printf("foreman-bench compare: N=%d clients, %.1f s per row, payload %zu bytes, %u cores, "
                    "load average %s before, %s after; latencies in us\n\n",
                    clients, duration, payload, std::thread::hardware_concurrency(), load_before.c_str(),
                    load_after.c_str());
        print_table(stdout, rows);
        std::printf("\nRATIOS\n");
        for (auto& x : ratios) {
            if (std::isnan(x.value)) {
                std::printf("  %-44s %10s\n", x.text.c_str(), "n/a");
                continue;
            }
            std::printf("  %-44s %9.2fx", x.text.c_str(), x.value);
            if (!x.op.empty()) {
                std::printf("   target %s %.1fx%s%s: %s", x.op.c_str(), x.target, x.goal.empty() ? "" : ", ",
                            x.goal.c_str(), x.met() ? "met" : "MISSED");
            }
            std::printf("\n");
        }
        std::printf("\nNOTES\n");
        for (auto& note : notes) std::printf("- %s\n", note.c_str());
    }
    std::uint64_t errors = 0;
    for (auto& row : rows) errors += row.result.error_count();
    return errors > 0 ? 1 : 0;
}

} // namespace foreman::bench
