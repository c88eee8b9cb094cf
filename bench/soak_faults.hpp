#pragma once
// foreman-bench soak's faults, and what the broker must do about each:
//
//   session-close  a client closes its control connection while holding one
//                  or two session leases (it keeps the worker connections
//                  open, so only the close can end them): they end at once
//   client-kill    a client process holding a lease of the notify=none pool
//                  is SIGKILLed: the lease ends at once
//   detached-ttl   a detach=1 lease is abandoned (connection and worker
//                  socket closed), sometimes after a RENEW from another
//                  connection of the same uid: it lives until its ttl, then ends
//   worker-kill    the leased worker is SIGKILLed: the holder gets EXPIRED
//                  worker-exit and end-of-file on the worker socket, and its
//                  RELEASE afterwards no-such-lease
//   worker-stop    the leased worker is SIGSTOPped: after heartbeat_timeout_ms
//                  the same as worker-kill
//   garbage        lines that are not requests each get one FAIL; a first
//                  line that is not VERSION gets FAIL * version and the close;
//                  an over-long line gets FAIL * line too long and the close
//   unknown-lease  RENEW and RELEASE of leases never granted, ended, or
//                  another client's: FAIL no-such-lease
//
// Faults come in shuffled rounds of every kind (or of those chosen), drawn from the seed and the
// fault's number alone, so a run injects the same faults whichever client
// thread happens to reach them.

#include <array>
#include <cstdint>
#include <random>
#include <string>
#include <string_view>
#include <vector>

namespace foreman::bench {

enum class SoakFault { session_close, client_kill, detached_ttl, worker_kill, worker_stop, garbage, unknown_lease };
inline constexpr std::array<SoakFault, 7> soak_fault_kinds{
    SoakFault::session_close, SoakFault::client_kill, SoakFault::detached_ttl, SoakFault::worker_kill,
    SoakFault::worker_stop,   SoakFault::garbage,     SoakFault::unknown_lease};

std::string_view soak_fault_name(SoakFault kind);
/// The kinds named in `list` ("worker-kill,garbage"); throws std::invalid_argument.
std::vector<SoakFault> parse_soak_faults(const std::string& list);

/// The kind of fault number `n` among `kinds` (not empty), and `rng`
/// seeded for its details.
SoakFault soak_fault_for(std::uint64_t seed, std::uint64_t n, const std::vector<SoakFault>& kinds,
                         std::mt19937_64& rng);

class SoakClient;
/// Injects one fault from client `c`'s thread and checks the broker's
/// response: "" when it was as specified, else one line saying what was not.
/// client::Error of kind io or protocol (c's connection broke) is thrown.
std::string inject_fault(SoakFault kind, SoakClient& c, std::mt19937_64& rng);

} // namespace foreman::bench
