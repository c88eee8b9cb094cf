#pragma once
// foreman-bench's modes; each parses its own options (argv after the mode).

#include <string>
#include <vector>

namespace foreman::bench {

/// `foreman-bench load`: N clients looping LEASE -> echo -> RELEASE.
int load_main(const std::vector<std::string>& args);
/// `foreman-bench compare`: raw ideal, spawn-per-connection, foreman cold and warm.
int compare_main(const std::vector<std::string>& args);
/// `foreman-bench tune`: lease_ttl and heartbeat settings against injected faults.
int tune_main(const std::vector<std::string>& args);
/// `foreman-bench soak`: a million lease cycles with faults; checks the broker leaks nothing.
int soak_main(const std::vector<std::string>& args);
/// `foreman-bench fairness`: light users' wait with and without a greedy user.
int fairness_main(const std::vector<std::string>& args);

} // namespace foreman::bench
