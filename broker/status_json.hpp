#pragma once
// STATUS's JSON (PROTOCOL.md): the engine's snapshot as Boost.JSON.

#include "lease/snapshot.hpp"

#include <string>

namespace foreman::broker {

/// {"version":1000,"workers_total":N,"max_workers":N,"shutting_down":false,
///  "pools":[{"protocol":..,"queued":N,"leases_granted":N,"draining":false,
///  "workers_started":N,"spawn_failures":N,"workers":[{"id":"..","pid":N,"state":"idle",
///  "requests":N,"user":"..","status":"..","lease":N}]}]}
/// "status" is present once the worker sent STATUS=, "lease" while leased.
std::string status_json(const lease::Snapshot& snapshot);

} // namespace foreman::broker
