#pragma once
// One request's reply and what it means: the OK fields of each verb decoded,
// a FAIL turned into Error. Pure: no I/O.

#include "client/error.hpp"
#include "protocol/control_line.hpp"
#include "spawn/unique_fd.hpp"

#include <boost/json/value.hpp>

#include <chrono>
#include <cstdint>
#include <string>
#include <sys/types.h>

namespace foreman::client {

/// The reply to one request, with the descriptor that came with it (LEASE OK only).
struct Answer {
    protocol::Verb verb = protocol::Verb::status; ///< what was asked
    std::string label;    ///< how errors name the request, e.g. "LEASE echo"
    protocol::Reply reply; ///< Kind::ok or Kind::fail
    spawn::unique_fd fd;  ///< the worker connection of a LEASE OK
};

/// A granted lease, without the RAII of Lease (the asynchronous API's result).
struct LeaseGrant {
    std::uint64_t lease_id = 0;
    pid_t worker_pid = 0;
    std::chrono::milliseconds ttl{0};
    spawn::unique_fd fd; ///< connected stream socket to the worker
};

/// Throws Error (refused) when `a` is a FAIL.
void check_ok(const Answer& a);
/// `OK <tag> <lease_id> <pid> <ttl_ms>` with its descriptor; throws Error.
LeaseGrant decode_lease(Answer&& a);
/// `OK <tag> <ttl_ms>`; throws Error.
std::chrono::milliseconds decode_renew(const Answer& a);
/// `OK <tag> <json>`; throws Error.
boost::json::value decode_status(const Answer& a);
/// `OK <tag>` (RELEASE, REGISTER, UNREGISTER); throws Error.
void decode_empty(const Answer& a);

} // namespace foreman::client
