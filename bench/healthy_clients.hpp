#pragma once
// Healthy clients for foreman-bench tune's false-expiry count: each leases
// from a pool, holds the lease for a random 0..hold_max x ttl while echoing
// a few bytes through the worker every echo_every, RENEWs at ttl/3 as a
// careful client does, then RELEASEs. Nothing is faulty, so every EXPIRED
// ttl or worker-exit they receive is a false expiry.

#include "bench/histogram.hpp"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace foreman::bench {

struct HealthyOptions {
    std::string socket;
    std::string protocol = "load";
    int clients = 8;
    std::chrono::milliseconds ttl{1000};     ///< the pool's lease_ttl_ms
    double hold_max = 3;                     ///< a hold lasts uniform 0..hold_max x ttl
    std::chrono::milliseconds echo_every{20};
    std::size_t payload = 64;
    std::uint64_t seed = 1;
};

struct HealthyResult {
    std::uint64_t leases = 0;
    double lease_seconds = 0;                     ///< time spent holding leases, all clients
    std::map<std::string, std::uint64_t> expired; ///< EXPIRED by reason
    std::map<std::string, std::uint64_t> errors;  ///< FAIL codes, "io", "echo"
    /// How late the clients woke for their renewals and echoes (ns): the
    /// machine's scheduling slop as a client sees it.
    Histogram slip{std::uint64_t{1} << 36};

    /// EXPIRED ttl and worker-exit: none of them had a cause.
    std::uint64_t false_expiries() const;
};

class HealthyClients {
public:
    explicit HealthyClients(HealthyOptions options);
    ~HealthyClients();
    HealthyClients(const HealthyClients&) = delete;
    HealthyClients& operator=(const HealthyClients&) = delete;

    /// Ends every hold now (RELEASE), joins the clients, returns the tally.
    HealthyResult stop();

private:
    void client(int index, HealthyResult& tally);

    HealthyOptions o_;
    std::atomic<bool> stop_{false};
    std::vector<HealthyResult> tallies_;
    std::vector<std::thread> threads_;
};

} // namespace foreman::bench
