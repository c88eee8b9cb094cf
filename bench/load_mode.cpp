// foreman-bench load: N clients, each looping LEASE -> request/response on
// the worker connection -> RELEASE, against a broker it starts (the echo
// worker pool below) or one it attaches to with --socket.

#include "bench/broker_process.hpp"
#include "bench/load_runner.hpp"
#include "bench/modes.hpp"
#include "bench/report.hpp"
#include "client/connection.hpp"

#include <boost/json.hpp>
#include <boost/program_options.hpp>

#include <iostream>

namespace po = boost::program_options;

namespace foreman::bench {

namespace {

/// Spawns so far in pool `protocol`, from STATUS.
double workers_started(const std::string& socket, const std::string& protocol) {
    auto conn = client::Connection::connect(socket);
    auto status = conn.status();
    for (auto& pool : status.at("pools").as_array())
        if (pool.at("protocol").as_string() == protocol && pool.as_object().contains("workers_started"))
            return static_cast<double>(pool.at("workers_started").to_number<std::int64_t>());
    return 0;
}

} // namespace

int load_main(const std::vector<std::string>& args) {
    po::options_description desc("foreman-bench load [OPTIONS]\n\n"
                                 "N clients loop LEASE -> echo PAYLOAD bytes through the worker -> RELEASE.\n"
                                 "Without --socket it starts foreman with a pool 'echo' of foreman-echo workers.\n\n"
                                 "Options");
    int clients = 1, workers = 4, max_requests = 0;
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
        broker.emplace(dir->path(), "max_clients = 20000\n[pool." + protocol + "]\npath = " + bin_dir() +
                                        "/foreman-echo\nnotify = " + notify + "\nmin_idle = " + std::to_string(workers) +
                                        "\nmax_instances = " + std::to_string(workers) +
                                        "\nmax_requests = " + std::to_string(max_requests) +
                                        "\nrecycle_jitter_pct = 0\n");
        socket = broker->socket();
    }

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
        row.extra["broker_cpu_s"] = std::chrono::duration<double>(broker->cpu_time() - cpu_before).count();
        row.extra["broker_rss_mib"] = static_cast<double>(broker->rss_bytes()) / (1024.0 * 1024.0);
    }
    std::vector<NamedResult> rows;
    rows.push_back(std::move(row));
    if (vm.count("json")) std::cout << to_json(rows);
    else if (vm.count("csv")) std::cout << to_csv(rows);
    else print_table(stdout, rows);
    return rows[0].result.error_count() > 0 ? 1 : 0;
}

} // namespace foreman::bench
