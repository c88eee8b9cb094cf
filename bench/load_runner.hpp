#pragma once
// N concurrent clients, each looping one cycle as fast as it can (or with a
// think time between cycles), for a duration or a count. Two kinds of cycle:
//   lease:   LEASE -> descriptor -> payload echoed through the worker -> close
//            -> RELEASE (foreman, or any broker speaking protocol 1000)
//   connect: connect() -> payload echoed -> close (a spawn-per-connection
//            server such as s6-ipcserver)
// Latencies go into log-linear histograms, in nanoseconds.
// Lease cycles can name a user per cycle (UserChoice: Zipf over N users, or
// one user per client), hold the lease a while (simulated work), and greet
// the worker with "@user NAME" (foreman-echo --warmup-us) to time its first
// answer, split by whether the worker last served that user (affinity hit).

#include "bench/histogram.hpp"
#include "client/lease_options.hpp"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace foreman::bench {

enum class CycleKind { lease, connect };

/// Which user each lease cycle names (issue 7: affinity and fairness in
/// shared pools). Users are called <prefix>1 .. <prefix>N.
struct UserChoice {
    int users = 0;               ///< 0: every cycle uses LoadOptions::lease.user (or none)
    double zipf_s = 0;           ///< each cycle's user drawn from Zipf(zipf_s) over the N users
    bool one_per_client = false; ///< instead: client i is always user (i % N) + 1
    std::uint64_t seed = 1;      ///< client i draws from a generator seeded with seed + i
    std::string prefix = "u";
    /// false: LEASE carries no user= (the worker is still greeted with the
    /// user), so the broker cannot prefer the worker that last served it:
    /// the baseline against which affinity is measured.
    bool tell_broker = true;
};

struct LoadOptions {
    CycleKind kind = CycleKind::lease;
    std::string socket;                ///< the broker's control socket, or the server's
    std::string protocol = "echo";     ///< the pool (lease cycles)
    client::LeaseOptions lease;        ///< user, ttl_ms, wait_ms... (lease cycles)
    int clients = 1;                   ///< 0 with a duration: nobody cycles (an idle run)
    std::optional<std::chrono::milliseconds> duration; ///< stop after this long...
    std::optional<std::uint64_t> count;                ///< ...or after this many cycles in all
    std::size_t payload = 64;          ///< bytes echoed per cycle
    std::chrono::microseconds think{0}; ///< pause between a client's cycles
    std::chrono::microseconds hold{0};  ///< a lease is held this long after its echo (simulated work)
    std::chrono::microseconds refused_pause{0}; ///< pause after a refused LEASE (a client backing off)
    UserChoice user_choice;            ///< lease cycles: the user of each cycle
    /// Lease cycles with a user: the worker connection begins with
    /// "@user NAME\n", answered "@user warm|cold\n" (foreman-echo --warmup-us).
    bool greet_worker = false;
    /// When given, the run also stops once it is set (it may have no duration).
    const std::atomic<bool>* stop = nullptr;
    /// Called about every 250 ms from the calling thread while clients run.
    std::function<void(std::chrono::duration<double> elapsed, std::uint64_t cycles, std::uint64_t errors)> progress;
};

struct LoadResult {
    Histogram lease_wait; ///< LEASE sent -> OK and descriptor received (lease cycles)
    Histogram cycle;      ///< the whole cycle
    std::uint64_t cycles = 0;
    double seconds = 0;
    std::uint64_t expiries = 0;                  ///< EXPIRED events the clients received
    std::map<std::string, std::uint64_t> errors; ///< by FAIL code, or "io", "protocol", "echo", "greeting"

    // Cycles with a user. A lease is an affinity hit when its worker (by the
    // pid of the OK line) last served the same user in this run.
    std::uint64_t affinity_hits = 0;
    std::uint64_t affinity_misses = 0;
    Histogram first_answer_hit;  ///< greet_worker: LEASE sent -> the worker's "@user" answer, on a hit
    Histogram first_answer_miss; ///< the same, on a miss
    std::uint64_t cold = 0;      ///< greet_worker: answers "cold" (the worker paid its warm-up)

    double per_second() const { return seconds > 0 ? static_cast<double>(cycles) / seconds : 0; }
    std::uint64_t error_count() const;
    /// Affinity hits among the leases with a user, in percent (0 when none).
    double hit_percent() const;
    /// Adds another run's counts, histograms and seconds (runs taken in turns).
    void merge(const LoadResult& other);
};

/// Writes `out` to `fd` and reads as many bytes back; true when they match.
bool echo_round_trip(int fd, const std::vector<char>& out, std::vector<char>& in);

/// Runs the load and returns when every client has stopped.
LoadResult run_load(const LoadOptions& options);

/// Opens `n` control connections (handshake done) and keeps them open until
/// the returned object is destroyed: idle clients, for memory figures.
class IdleClients {
public:
    IdleClients(const std::string& socket, int n);
    ~IdleClients();
    IdleClients(const IdleClients&) = delete;
    IdleClients& operator=(const IdleClients&) = delete;
    std::size_t size() const { return fds_.size(); }

private:
    std::vector<int> fds_;
};

} // namespace foreman::bench
