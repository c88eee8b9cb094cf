#pragma once
// A worker's states and the events that move it, as one explicit table
// (s6-supervise's actions[state][event]). The engine consults the table on
// every event, so an impossible pair is caught where it happens, not implied.

#include <cstdint>
#include <string_view>

namespace foreman::lease {

enum class WorkerState : std::uint8_t {
    starting,  ///< spawned, not ready yet (no lease)
    idle,      ///< ready, no lease
    leased,    ///< holds exactly one lease
    finishing, ///< notify=foreman: lease ended, READY=1 not yet received
    stopping,  ///< SIGTERM sent, SIGKILL after kill_grace; waiting for its exit
    gone,      ///< exited and reaped: the record is dropped
};
inline constexpr int worker_state_count = 6;

enum class WorkerEvent : std::uint8_t {
    ready,            ///< READY=1, or the first successful connect() with notify=none
    granted,          ///< a lease was given to it
    lease_ended,      ///< its lease ended and it may serve again at once
    lease_ended_owes_ready, ///< its lease ended; notify=foreman: wait for READY=1
    heartbeat,        ///< WATCHDOG=1 (or READY=1 that only proves liveness)
    retire,           ///< decided: limits, idle, STOPPING=1, eviction, hung, shutdown
    grace_over,       ///< kill_grace passed after SIGTERM: SIGKILL
    exited,           ///< the process is gone
};
inline constexpr int worker_event_count = 8;

/// What an event does in a state.
enum class Effect : std::uint8_t {
    move,       ///< go to `next`
    ignore,     ///< harmless and expected: nothing changes
    impossible, ///< the engine never does this: a bug if it happens
};

struct Transition {
    Effect effect;
    WorkerState next;
};

/// The table lookup.
Transition transition(WorkerState state, WorkerEvent event);

/// The name STATUS shows: finishing is shown as "starting" (it is not ready
/// for a lease), gone never appears.
std::string_view public_name(WorkerState state);
std::string_view to_string(WorkerState state);
std::string_view to_string(WorkerEvent event);

} // namespace foreman::lease
