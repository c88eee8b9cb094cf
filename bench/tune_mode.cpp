// foreman-bench tune: sweeps lease_ttl_ms, the workers' heartbeat interval
// and the pool's heartbeat_timeout_ms; for each setting starts a broker,
// measures its CPU per heartbeat, then runs healthy clients under CPU load
// (false expiries) while injecting faults (recovery times), and finally
// recommends the setting that recovers fastest within the user's tolerance.

#include "bench/broker_process.hpp"
#include "bench/cpu_hogs.hpp"
#include "bench/fault_injector.hpp"
#include "bench/healthy_clients.hpp"
#include "bench/heartbeat_cost.hpp"
#include "bench/lease_holder.hpp"
#include "bench/modes.hpp"
#include "bench/pool_status.hpp"
#include "bench/tune_report.hpp"
#include "client/connection.hpp"

#include <boost/program_options.hpp>

#include <algorithm>
#include <filesystem>
#include <iostream>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace po = boost::program_options;

namespace foreman::bench {

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

/// "500,1000,2000" -> numbers; throws on anything else.
std::vector<std::uint64_t> number_list(const std::string& option, const std::string& text) {
    std::vector<std::uint64_t> out;
    std::stringstream ss(text);
    std::string item;
    while (std::getline(ss, item, ',')) {
        if (item.empty() || item.find_first_not_of("0123456789") != std::string::npos)
            throw po::error("--" + option + ": '" + text + "' is not a comma-separated list of whole numbers");
        out.push_back(std::stoull(item));
    }
    if (out.empty()) throw po::error("--" + option + " is empty");
    return out;
}

std::vector<double> factor_list(const std::string& text) {
    std::vector<double> out;
    std::stringstream ss(text);
    std::string item;
    while (std::getline(ss, item, ',')) {
        std::size_t used = 0;
        double v = 0;
        try {
            v = std::stod(item, &used);
        } catch (...) {
            used = 0;
        }
        if (used != item.size() || v < 1) throw po::error("--timeout-factor: '" + text + "' needs numbers >= 1");
        out.push_back(v);
    }
    if (out.empty()) throw po::error("--timeout-factor is empty");
    return out;
}

struct RunOptions {
    int workers = 6;        ///< the load pool
    int clients = 8;        ///< healthy clients
    int hb_workers = 16;    ///< leased, beating workers for the CPU figure
    int cpu_hogs = 2;
    double duration_s = 5;  ///< load + faults per setting
    double fault_rate = 1;  ///< faults per second, per kind
    double hold_max = 3;
    milliseconds echo_every{20};
    milliseconds cpu_window{1000};
    std::uint64_t seed = 1;
};

std::string pool_section(const std::string& name, const std::string& echo, const TuneSetting& s, int workers,
                         bool beating) {
    std::string c = "[pool." + name + "]\npath = " + echo + "\n";
    if (beating)
        c += "args = --heartbeat-ms " + std::to_string(s.heartbeat_ms) +
             "\nnotify = foreman\nheartbeat_timeout_ms = " + std::to_string(s.heartbeat_timeout_ms) + "\n";
    else
        c += "notify = none\n";
    c += "min_idle = " + std::to_string(workers) + "\nmax_instances = " + std::to_string(workers) +
         "\nlease_ttl_ms = " + std::to_string(s.ttl_ms) + "\nkill_grace_ms = " + std::to_string(s.kill_grace_ms) +
         "\nqueue_timeout_ms = 60000\nrecycle_jitter_pct = 0\n";
    return c;
}

/// Waits until every pool has its min_idle workers idle.
void wait_idle(const std::string& socket, const std::vector<std::pair<std::string, int>>& pools) {
    auto conn = client::Connection::connect(socket);
    auto deadline = Clock::now() + std::chrono::seconds(15);
    for (;;) {
        auto status = conn.status();
        bool all = true;
        for (auto& [name, n] : pools) all = all && pool_workers_in(status, name, "idle") >= n;
        if (all) return;
        if (Clock::now() > deadline) throw std::runtime_error("the pools' workers did not all become idle in 15 s");
        std::this_thread::sleep_for(milliseconds(5));
    }
}

TuneRow run_setting(const TuneSetting& s, const RunOptions& o, const std::string& keep_logs) {
    TuneRow row;
    row.setting = s;
    const std::string echo = bin_dir() + "/foreman-echo";
    std::string config = "max_clients = 20000\nmax_workers = 1024\n";
    config += pool_section("load", echo, s, o.workers, true);
    config += pool_section("hb", echo, s, o.hb_workers, true);
    config += pool_section(fault_pool(FaultKind::client_kill), echo, s, 1, true);
    config += pool_section(fault_pool(FaultKind::detached), echo, s, 1, false);
    config += pool_section(fault_pool(FaultKind::worker_stop), echo, s, 1, true);
    ScratchDir dir;
    BrokerProcess broker(dir.path(), config);
    wait_idle(broker.socket(), {{"load", o.workers},
                                {"hb", o.hb_workers},
                                {fault_pool(FaultKind::client_kill), 1},
                                {fault_pool(FaultKind::detached), 1},
                                {fault_pool(FaultKind::worker_stop), 1}});

    // 1. Broker CPU per heartbeat, on a quiet machine.
    row.heartbeat = measure_heartbeat_cost(broker.socket(), "hb", o.hb_workers, milliseconds(s.heartbeat_ms),
                                           broker.pid(), o.cpu_window);

    // 2. Healthy clients and faults, with the cores kept busy.
    const auto probe_wait = milliseconds(std::max<std::uint64_t>(
        10000, 3 * (s.ttl_ms + s.heartbeat_timeout_ms + s.kill_grace_ms) + 2000));
    {
        CpuHogs hogs(o.cpu_hogs);
        HealthyOptions h;
        h.socket = broker.socket();
        h.clients = o.clients;
        h.ttl = milliseconds(s.ttl_ms);
        h.hold_max = o.hold_max;
        h.echo_every = o.echo_every;
        h.seed = o.seed;
        HealthyClients clients(h);
        std::vector<std::unique_ptr<FaultInjector>> injectors;
        for (auto k : all_fault_kinds)
            injectors.push_back(std::make_unique<FaultInjector>(broker.socket(), k, o.fault_rate, probe_wait));
        std::this_thread::sleep_for(std::chrono::duration<double>(o.duration_s));
        for (auto& i : injectors) i->stop(); // each finishes the fault in flight
        row.load = clients.stop();
        for (std::size_t i = 0; i < injectors.size(); ++i) row.faults[i] = injectors[i]->stats();
    }
    if (!keep_logs.empty()) {
        broker.stop();
        std::string name = s.label();
        std::replace(name.begin(), name.end(), '/', '-');
        std::filesystem::copy_file(broker.log_path(), keep_logs + "/foreman-" + name + ".log",
                                   std::filesystem::copy_options::overwrite_existing);
    }
    return row;
}

} // namespace

int tune_main(const std::vector<std::string>& args) {
    if (!args.empty() && args[0] == "--hold-lease")
        return hold_lease_main(std::vector<std::string>(args.begin() + 1, args.end()));

    po::options_description desc(
        "foreman-bench tune [OPTIONS]\n\n"
        "For each setting (ttl x heartbeat interval x timeout factor) starts foreman with foreman-echo pools,\n"
        "measures the broker's CPU per heartbeat, then for --duration runs healthy clients (false expiries)\n"
        "under --cpu-hogs busy threads while injecting three faults (recovery time): a lease holder SIGKILLed,\n"
        "a detached lease abandoned, a leased worker SIGSTOPped. Writes CSV, a PNG (gnuplot), a table, and the\n"
        "setting that recovers fastest within tolerance as config lines. See docs/tuning.md.\n\n"
        "Options");
    std::string ttl_list, hb_list, factor_text, out_dir, csv, png, keep_logs;
    RunOptions o;
    std::uint64_t kill_grace = 2000;
    Tolerance tol;
    double max_recovery = 0;
    desc.add_options()
        ("help,h", "this text")
        ("ttl-ms", po::value(&ttl_list)->default_value("500,1000,2000,5000"), "lease_ttl_ms values")
        ("heartbeat-ms", po::value(&hb_list)->default_value("50,100,250"), "worker heartbeat intervals (ms)")
        ("timeout-factor", po::value(&factor_text)->default_value("2,3,5"),
         "heartbeat_timeout_ms = factor x interval")
        ("kill-grace-ms", po::value(&kill_grace)->default_value(2000), "the pools' kill_grace_ms (SIGTERM -> SIGKILL)")
        ("duration,d", po::value(&o.duration_s)->default_value(5), "seconds of load and faults per setting")
        ("fault-rate", po::value(&o.fault_rate)->default_value(1),
         "faults per second of each kind (a fault waits for the previous one of its kind to recover)")
        ("workers", po::value(&o.workers)->default_value(6), "workers of the load pool")
        ("clients,c", po::value(&o.clients)->default_value(8), "healthy clients holding leases")
        ("hold-max", po::value(&o.hold_max)->default_value(3), "a hold lasts uniform 0..hold-max x ttl")
        ("cpu-hogs", po::value(&o.cpu_hogs)->default_value(2), "busy-looping threads during load and faults")
        ("hb-workers", po::value(&o.hb_workers)->default_value(16), "leased beating workers for the CPU figure")
        ("cpu-window-ms", po::value<std::uint64_t>()->default_value(1000), "CPU measuring window, idle and beating")
        ("max-false-expiry-rate", po::value(&tol.max_false_expiry_rate)->default_value(0.001),
         "tolerance: false expiries per lease")
        ("max-recovery-ms", po::value(&max_recovery), "tolerance: p99 recovery of the slowest fault kind")
        ("max-overhead-pct", po::value(&tol.max_overhead_pct)->default_value(5),
         "tolerance: broker CPU on heartbeats, % of one core, for --fleet leased workers")
        ("fleet", po::value(&tol.fleet)->default_value(100), "leased workers the overhead tolerance is for")
        ("seed", po::value(&o.seed)->default_value(1), "random hold times")
        ("out", po::value(&out_dir), "folder for tune.csv, tune.png, tune.gp (created)")
        ("csv", po::value(&csv), "CSV file (default tune.csv in --out or the current folder)")
        ("png", po::value(&png), "PNG file (default tune.png beside the CSV)")
        ("keep-logs", po::value(&keep_logs), "copy each setting's broker log (foreman.log) into this folder")
        ("quick", "one tiny setting, about 2 s: a smoke test");
    po::variables_map vm;
    po::store(po::command_line_parser(args).options(desc).run(), vm);
    po::notify(vm);
    if (vm.count("help")) {
        std::cout << desc << "\n";
        return 0;
    }
    o.cpu_window = milliseconds(vm["cpu-window-ms"].as<std::uint64_t>());
    if (vm.count("max-recovery-ms")) tol.max_recovery_ms = max_recovery;
    if (vm.count("quick")) {
        auto unset = [&](const char* name) { return vm[name].defaulted(); };
        if (unset("ttl-ms")) ttl_list = "300";
        if (unset("heartbeat-ms")) hb_list = "50";
        if (unset("timeout-factor")) factor_text = "3";
        if (unset("kill-grace-ms")) kill_grace = 50;
        if (unset("duration")) o.duration_s = 0.5;
        if (unset("fault-rate")) o.fault_rate = 10;
        if (unset("workers")) o.workers = 2;
        if (unset("clients")) o.clients = 2;
        if (unset("cpu-hogs")) o.cpu_hogs = 1;
        if (unset("hb-workers")) o.hb_workers = 4;
        if (unset("cpu-window-ms")) o.cpu_window = milliseconds(200);
    }
    auto ttls = number_list("ttl-ms", ttl_list), hbs = number_list("heartbeat-ms", hb_list);
    auto factors = factor_list(factor_text);
    for (auto t : ttls)
        if (t < 100) throw po::error("--ttl-ms: each ttl must be at least 100 (the protocol's minimum)");
    for (auto h : hbs)
        if (h < 1) throw po::error("--heartbeat-ms: intervals must be at least 1");
    if (o.workers < 1 || o.clients < 0 || o.hb_workers < 1 || o.cpu_hogs < 0 || o.duration_s < 0)
        throw po::error("--workers, --hb-workers must be >= 1; --clients, --cpu-hogs, --duration >= 0");

    if (!out_dir.empty()) std::filesystem::create_directories(out_dir);
    if (!keep_logs.empty()) std::filesystem::create_directories(keep_logs);
    const std::string base = out_dir.empty() ? "" : out_dir + "/";
    if (csv.empty()) csv = base + "tune.csv";
    if (png.empty()) {
        auto folder = std::filesystem::path(csv).parent_path();
        png = (folder.empty() ? std::filesystem::path("tune.png") : folder / "tune.png").string();
    }

    std::vector<TuneSetting> settings;
    for (auto t : ttls)
        for (auto h : hbs)
            for (auto f : factors)
                settings.push_back({t, h, static_cast<std::uint64_t>(static_cast<double>(h) * f + 0.5), kill_grace});
    std::fprintf(stderr, "foreman-bench tune: %zu settings, %.1f s of load each, %d clients on %d workers, "
                         "%d cpu hogs, %g faults/s per kind\n",
                 settings.size(), o.duration_s, o.clients, o.workers, o.cpu_hogs, o.fault_rate);

    std::vector<TuneRow> rows;
    for (std::size_t i = 0; i < settings.size(); ++i) {
        auto t0 = Clock::now();
        rows.push_back(run_setting(settings[i], o, keep_logs));
        const auto& r = rows.back();
        for (auto& [what, n] : r.load.errors)
            std::fprintf(stderr, "  healthy clients: %llu x %s\n", static_cast<unsigned long long>(n), what.c_str());
        std::fprintf(stderr, "  [%zu/%zu] %-16s %5.1f s: leases %llu, false expiries %llu, %.2f us/heartbeat\n", i + 1,
                     settings.size(), settings[i].label().c_str(),
                     std::chrono::duration<double>(Clock::now() - t0).count(),
                     static_cast<unsigned long long>(r.load.leases),
                     static_cast<unsigned long long>(r.load.false_expiries()), r.heartbeat.cpu_us_per_heartbeat);
    }

    auto chosen = recommend(rows, tol);
    write_csv(csv, rows, tol, chosen);
    std::printf("\n");
    print_table(stdout, rows, tol, chosen);
    print_recommendation(stdout, rows, tol, chosen);
    std::string why = plot_png(png, rows, tol, chosen);
    std::printf("\nCSV: %s\n", csv.c_str());
    if (why.empty()) std::printf("plot: %s\n", png.c_str());
    else std::printf("plot skipped: %s\n", why.c_str());
    return 0;
}

} // namespace foreman::bench
