#include "lease/worker_state.hpp"

#include <array>

namespace foreman::lease {
namespace {

using S = WorkerState;
constexpr Transition to(S s) { return {Effect::move, s}; }
constexpr Transition ign{Effect::ignore, S::gone};
constexpr Transition bad{Effect::impossible, S::gone};

// Rows: states in declaration order. Columns: events in declaration order:
//            ready          granted        lease_ended    owes_ready        heartbeat  retire           grace_over       exited
constexpr std::array<std::array<Transition, worker_event_count>, worker_state_count> table{{
    /* starting  */ {to(S::idle), bad,           bad,           bad,              ign,       to(S::stopping), bad,             to(S::gone)},
    /* idle      */ {ign,         to(S::leased), bad,           bad,              ign,       to(S::stopping), bad,             to(S::gone)},
    // leased + ready: notify=foreman's "finished this lease" (the engine ends the
    // lease with worker-ready); with notify=systemd READY=1 arrives as heartbeat.
    /* leased    */ {to(S::idle), bad,           to(S::idle),   to(S::finishing), ign,       to(S::stopping), bad,             to(S::gone)},
    /* finishing */ {to(S::idle), bad,           bad,           bad,              ign,       to(S::stopping), bad,             to(S::gone)},
    // A stopping worker has no lease (it is ended before the worker is
    // retired); it may still talk while it winds down.
    /* stopping  */ {ign,         bad,           bad,           bad,              ign,       ign,             to(S::stopping), to(S::gone)},
    /* gone      */ {bad,         bad,           bad,           bad,              bad,       bad,             bad,             bad},
}};

} // namespace

Transition transition(WorkerState state, WorkerEvent event) {
    return table[static_cast<int>(state)][static_cast<int>(event)];
}

std::string_view public_name(WorkerState state) {
    switch (state) {
    case S::starting:
    case S::finishing: return "starting";
    case S::idle: return "idle";
    case S::leased: return "leased";
    case S::stopping:
    case S::gone: return "stopping";
    }
    return "stopping";
}

std::string_view to_string(WorkerState state) {
    switch (state) {
    case S::starting: return "starting";
    case S::idle: return "idle";
    case S::leased: return "leased";
    case S::finishing: return "finishing";
    case S::stopping: return "stopping";
    case S::gone: return "gone";
    }
    return "?";
}

std::string_view to_string(WorkerEvent event) {
    switch (event) {
    case WorkerEvent::ready: return "ready";
    case WorkerEvent::granted: return "granted";
    case WorkerEvent::lease_ended: return "lease_ended";
    case WorkerEvent::lease_ended_owes_ready: return "lease_ended_owes_ready";
    case WorkerEvent::heartbeat: return "heartbeat";
    case WorkerEvent::retire: return "retire";
    case WorkerEvent::grace_over: return "grace_over";
    case WorkerEvent::exited: return "exited";
    }
    return "?";
}

} // namespace foreman::lease
