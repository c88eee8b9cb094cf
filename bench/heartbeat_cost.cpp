#include "bench/heartbeat_cost.hpp"

#include "client/connection.hpp"

#include <ctime>
#include <stdexcept>
#include <thread>
#include <vector>

namespace foreman::bench {

using Clock = std::chrono::steady_clock;

std::chrono::nanoseconds process_cpu_time(pid_t pid) {
    clockid_t id;
    if (::clock_getcpuclockid(pid, &id) != 0) throw std::runtime_error("clock_getcpuclockid failed");
    timespec ts{};
    if (::clock_gettime(id, &ts) != 0) throw std::runtime_error("clock_gettime of the broker's CPU clock failed");
    return std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec);
}

namespace {

/// Broker CPU ms per wall second over `window`.
double cpu_rate(pid_t broker, std::chrono::milliseconds window) {
    auto c0 = process_cpu_time(broker);
    auto t0 = Clock::now();
    std::this_thread::sleep_for(window);
    auto c1 = process_cpu_time(broker);
    auto t1 = Clock::now();
    return std::chrono::duration<double, std::milli>(c1 - c0).count() / std::chrono::duration<double>(t1 - t0).count();
}

} // namespace

HeartbeatCost measure_heartbeat_cost(const std::string& socket, const std::string& protocol, int workers,
                                     std::chrono::milliseconds interval, pid_t broker,
                                     std::chrono::milliseconds window) {
    HeartbeatCost r;
    auto conn = client::Connection::connect(socket);
    conn.on_expired([&](const client::Expired&) { ++r.expired; });
    r.baseline_cpu_ms_per_s = cpu_rate(broker, window);

    std::vector<std::string> tags;
    client::LeaseOptions lo;
    lo.wait_ms = 5000;
    for (int i = 0; i < workers; ++i) tags.push_back(conn.send_lease(protocol, lo));
    std::vector<client::Lease> leases;
    for (auto& tag : tags) leases.push_back(conn.wait_lease(tag));
    // Let the lease traffic settle and every worker reach its beat.
    std::this_thread::sleep_for(std::max(2 * interval, std::chrono::milliseconds(50)));
    r.beating_cpu_ms_per_s = cpu_rate(broker, window);
    conn.poll(std::chrono::milliseconds(0));
    for (auto& lease : leases) {
        try {
            lease.release();
        } catch (const client::Error& e) {
            if (!e.is(protocol::FailCode::no_such_lease)) throw;
        }
        lease.take_fd().reset();
    }
    r.heartbeats_per_s = workers * 1000.0 / static_cast<double>(interval.count());
    if (r.heartbeats_per_s > 0)
        r.cpu_us_per_heartbeat = (r.beating_cpu_ms_per_s - r.baseline_cpu_ms_per_s) * 1000.0 / r.heartbeats_per_s;
    return r;
}

} // namespace foreman::bench
