#pragma once
// What the engine decides; broker/ carries it out. The engine never acts.

#include "protocol/end_reason.hpp"
#include "protocol/fail_code.hpp"

#include <chrono>
#include <cstdint>
#include <string>
#include <variant>
#include <vector>

namespace foreman::lease {

using WorkerId = std::uint64_t;
using LeaseId = std::uint64_t;
using ClientId = std::uint64_t; ///< a control connection; 0 = none
using Ticket = std::uint64_t;   ///< one LEASE request, unique while it is pending
using Uid = std::uint32_t;

/// Answer LEASE `ticket` with OK: connect to `worker` and pass the descriptor.
// Fields have defaults: GCC 12 sees uninitialised members through std::variant.
struct Grant {
    Ticket ticket = 0;
    ClientId client = 0;
    LeaseId lease = 0;
    WorkerId worker = 0;
    int pid = 0;
    std::chrono::milliseconds ttl{0};
};

/// Answer LEASE `ticket` with FAIL.
struct Reject {
    Ticket ticket = 0;
    ClientId client = 0;
    protocol::FailCode code = protocol::FailCode::bad_request;
    std::string text;
};

/// Start a process for `worker` (already counted, in state starting); report
/// worker_started() or spawn_failed().
struct Spawn {
    WorkerId worker = 0;
    std::string protocol;
    std::string user; ///< per_user pools: the user it serves
};

/// SIGTERM the worker's process group.
struct Terminate {
    WorkerId worker = 0;
    int pid = 0;
};

/// SIGKILL the worker's process group.
struct Kill {
    WorkerId worker = 0;
    int pid = 0;
};

/// Send `EXPIRED <lease> <reason>` to `client` (still connected).
struct Expire {
    ClientId client = 0;
    LeaseId lease = 0;
    protocol::EndReason reason = protocol::EndReason::ttl;
};

using Decision = std::variant<Grant, Reject, Spawn, Terminate, Kill, Expire>;
using Decisions = std::vector<Decision>;

} // namespace foreman::lease
