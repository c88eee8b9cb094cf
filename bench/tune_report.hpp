#pragma once
// foreman-bench tune's results: one row per setting, written as CSV, a
// table, a gnuplot PNG, and the recommended setting as config lines.

#include "bench/fault_injector.hpp"
#include "bench/healthy_clients.hpp"
#include "bench/heartbeat_cost.hpp"

#include <array>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

namespace foreman::bench {

struct TuneSetting {
    std::uint64_t ttl_ms = 0;
    std::uint64_t heartbeat_ms = 0;         ///< the worker's WATCHDOG=1 interval
    std::uint64_t heartbeat_timeout_ms = 0; ///< the pool's heartbeat_timeout_ms
    std::uint64_t kill_grace_ms = 0;
    /// "ttl/heartbeat/timeout", e.g. "1000/100/300".
    std::string label() const;
};

struct TuneRow {
    TuneSetting setting;
    std::array<FaultStats, all_fault_kinds.size()> faults;
    HealthyResult load;
    HeartbeatCost heartbeat;

    /// Recovery percentile `q` of fault `kind`, in ms (0 when none recovered).
    double recovery_ms(FaultKind kind, double q) const;
    /// The slowest kind's p99: what --max-recovery-ms bounds.
    double worst_p99_ms() const;
    /// The mean over kinds of their p99: what the recommendation minimises.
    double mean_p99_ms() const;
    /// false expiries / leases (0 without leases).
    double false_expiry_rate() const;
    /// Broker CPU on heartbeats, in % of one core, for `fleet` leased workers.
    double overhead_pct(int fleet) const;
};

struct Tolerance {
    double max_false_expiry_rate = 0.001;
    std::optional<double> max_recovery_ms;
    double max_overhead_pct = 5;
    int fleet = 100; ///< leased workers the overhead is computed for
};

/// The row within tolerance with the lowest mean_p99_ms() (ties: lower
/// overhead), if any.
std::optional<std::size_t> recommend(const std::vector<TuneRow>& rows, const Tolerance& tol);

void write_csv(const std::string& path, const std::vector<TuneRow>& rows, const Tolerance& tol,
               std::optional<std::size_t> chosen);
void print_table(std::FILE* out, const std::vector<TuneRow>& rows, const Tolerance& tol,
                 std::optional<std::size_t> chosen);
void print_recommendation(std::FILE* out, const std::vector<TuneRow>& rows, const Tolerance& tol,
                          std::optional<std::size_t> chosen);

/// Writes `<png without .png>.gp` and runs gnuplot on it. Returns an empty
/// string on success, else why there is no plot (gnuplot missing, failed).
std::string plot_png(const std::string& png, const std::vector<TuneRow>& rows, const Tolerance& tol,
                     std::optional<std::size_t> chosen);

} // namespace foreman::bench
