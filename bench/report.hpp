#pragma once
// How foreman-bench prints results: a table for people, CSV and JSON for
// machines. Latencies are histograms of nanoseconds, printed in microseconds.

#include "bench/load_runner.hpp"

#include <cstdio>
#include <map>
#include <string>
#include <vector>

namespace foreman::bench {

/// One measured setting: a name, the load result, and extra figures
/// (spawns, rss_mib, ...) printed as further columns.
struct NamedResult {
    std::string name;
    LoadResult result;
    std::map<std::string, double> extra;
};

void print_table(std::FILE* out, const std::vector<NamedResult>& rows);
std::string to_csv(const std::vector<NamedResult>& rows);
std::string to_json(const std::vector<NamedResult>& rows);

/// Microseconds, with one decimal.
double us(std::uint64_t ns);

/// A terminal progress line on stderr ("\r..."), only when stderr is a terminal.
void progress_line(const std::string& label, double elapsed_s, std::uint64_t cycles, std::uint64_t errors);
void end_progress();

} // namespace foreman::bench
