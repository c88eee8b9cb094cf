#pragma once
// The engine's fixed policies, named in one place (Dovecot habit): the numbers
// PROTOCOL.md prescribes and the ones we chose where it is silent.

#include <chrono>

namespace foreman::lease::policy {

using namespace std::chrono_literals;

/// A pool whose workers die before they are ready waits this long after the
/// first failure before it spawns again...
inline constexpr std::chrono::milliseconds spawn_backoff_initial = 100ms;
/// ...doubling with each further failure, up to this...
inline constexpr std::chrono::milliseconds spawn_backoff_max = 30s;
/// ...and one worker that becomes ready resets all failures.

/// A notify=foreman worker owes a READY=1 after a lease that it did not end
/// itself; it gets the pool's start_timeout_ms to send it, like at start-up.

/// An idle worker whose max_idletime passes while the pool has no more than
/// min_idle idle workers is kept, and looked at again one idle period later:
/// retiring it would only start its replacement at once.

} // namespace foreman::lease::policy
