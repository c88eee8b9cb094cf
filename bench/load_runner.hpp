#pragma once
// N concurrent clients, each looping one cycle as fast as it can (or with a
// think time between cycles), for a duration or a count. Two kinds of cycle:
//   lease:   LEASE -> descriptor -> payload echoed through the worker -> close
//            -> RELEASE (foreman, or any broker speaking protocol 1000)
//   connect: connect() -> payload echoed -> close (a spawn-per-connection
//            server such as s6-ipcserver)
// Latencies go into log-linear histograms, in nanoseconds.

#include "bench/histogram.hpp"
#include "client/lease_options.hpp"

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace foreman::bench {

enum class CycleKind { lease, connect };

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
    /// Called about every 250 ms from the calling thread while clients run.
    std::function<void(std::chrono::duration<double> elapsed, std::uint64_t cycles, std::uint64_t errors)> progress;
};

struct LoadResult {
    Histogram lease_wait; ///< LEASE sent -> OK and descriptor received (lease cycles)
    Histogram cycle;      ///< the whole cycle
    std::uint64_t cycles = 0;
    double seconds = 0;
    std::uint64_t expiries = 0;                  ///< EXPIRED events the clients received
    std::map<std::string, std::uint64_t> errors; ///< by FAIL code, or "io", "protocol", "echo"

    double per_second() const { return seconds > 0 ? static_cast<double>(cycles) / seconds : 0; }
    std::uint64_t error_count() const;
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
