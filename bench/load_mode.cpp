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

#include <iostream>
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

} // namespace

int load_main(const std::vector<std::string>& args) {
    po::options_description desc("foreman-bench load [OPTIONS]\n\n"
                                 "N clients loop LEASE -> echo PAYLOAD bytes through the worker -> RELEASE.\n"
                                 "Without --socket it starts foreman with a pool 'echo' of foreman-echo workers.\n\n"
                                 "Options");
    int clients = 1, workers = 4, max_requests = 0, idle_clients = 0, holders = 0, heartbeat_ms = 0, threads = 0;
    double duration = 10;
    std::uint64_t count = 0, think_ms = 0, payload = 64;
    std::string socket, protocol = "echo", notify = "none", user;
    std::uint64_t ttl_ms = 0, wait_ms = 0;
    desc.add_options()
        ("help,h", "this text")
        ("clients,c", po::value(&clients)->default_value(1), "concurrent clients, each on its own connection")
        ("duration,d", po::value(&duration)->default_value(10), "seconds to run (unless --count)")
        ("count,n", po::value(&count), "cycles to run in all, instead of a duration")
        ("payload", po::value(&payload)->default_value(64), "bytes echoed through the worker per cycle (0: none)")
        ("think-ms", po::value(&think_ms)->default_value(0), "pause of each client between its cycles")
        ("protocol", po::value(&protocol)->default_value("echo"), "the pool to lease from")
        ("user", po::value(&user), "LEASE user=")
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

    std::optional<ScratchDir> dir;
    std::optional<BrokerProcess> broker;
    if (socket.empty()) {
        dir.emplace();
        std::string pool = "[pool." + protocol + "]\npath = " + bin_dir() + "/foreman-echo\nmin_idle = " +
                           std::to_string(workers) + "\nmax_instances = " + std::to_string(workers) +
                           "\nmax_requests = " + std::to_string(max_requests) + "\nrecycle_jitter_pct = 0\n";
        if (heartbeat_ms > 0)
            pool += "notify = foreman\nargs = --heartbeat-ms " + std::to_string(heartbeat_ms) +
                    "\nheartbeat_timeout_ms = " + std::to_string(3 * heartbeat_ms) + "\n";
        else
            pool += "notify = " + notify + "\n";
        broker.emplace(dir->path(), "max_clients = " + std::to_string(idle_clients + clients + 64) +
                                        "\nmax_workers = " + std::to_string(workers + 16) + "\n" +
                                        (threads > 0 ? "threads = " + std::to_string(threads) + "\n" : "") + pool);
        socket = broker->socket();
        wait_idle(socket, protocol, workers);
    }
    // Held leases and idle connections, for memory and heartbeat figures.
    std::optional<client::Connection> holder;
    std::vector<client::Lease> held;
    if (holders > 0) {
        holder.emplace(client::Connection::connect(socket));
        client::LeaseOptions hold;
        hold.wait_ms = 30000;
        for (int i = 0; i < holders; ++i) held.push_back(holder->lease(protocol, hold));
    }
    std::optional<IdleClients> idle;
    if (idle_clients > 0) idle.emplace(socket, idle_clients);

    LoadOptions o;
    o.socket = socket;
    o.protocol = protocol;
    o.clients = clients;
    o.payload = payload;
    o.think = std::chrono::milliseconds(think_ms);
    o.lease.user = user;
    if (vm.count("ttl-ms")) o.lease.ttl_ms = ttl_ms;
    if (vm.count("wait-ms")) o.lease.wait_ms = wait_ms;
    if (vm.count("count")) o.count = count;
    else o.duration = std::chrono::milliseconds(static_cast<long>(duration * 1000));
    const std::string label = "load " + protocol + " x" + std::to_string(clients);
    o.progress = [&](auto elapsed, std::uint64_t cycles, std::uint64_t errors) {
        progress_line(label, elapsed.count(), cycles, errors);
    };

    double spawns_before = workers_started(socket, protocol);
    auto cpu_before = broker ? broker->cpu_time() : std::chrono::nanoseconds(0);
    LoadResult r = run_load(o);
    end_progress();
    NamedResult row{label, std::move(r), {}};
    row.extra["spawns"] = workers_started(socket, protocol) - spawns_before;
    if (broker) {
        double cpu = std::chrono::duration<double>(broker->cpu_time() - cpu_before).count();
        row.extra["broker_cpu_s"] = cpu;
        row.extra["broker_cpu_pct"] = row.result.seconds > 0 ? 100.0 * cpu / row.result.seconds : 0;
        row.extra["broker_rss_mib"] = static_cast<double>(broker->rss_bytes()) / (1024.0 * 1024.0);
    }
    if (holders > 0) row.extra["held_leases"] = holders;
    if (idle) row.extra["idle_clients"] = static_cast<double>(idle->size());
    std::vector<NamedResult> rows;
    rows.push_back(std::move(row));
    if (vm.count("json")) std::cout << to_json(rows);
    else if (vm.count("csv")) std::cout << to_csv(rows);
    else print_table(stdout, rows);
    return rows[0].result.error_count() > 0 ? 1 : 0;
}

} // namespace foreman::bench
