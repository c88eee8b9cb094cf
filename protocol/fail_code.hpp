#pragma once
// The FAIL codes of PROTOCOL.md's control protocol.

#include <optional>
#include <string_view>

namespace foreman::protocol {

enum class FailCode {
    bad_request,      ///< malformed, unknown command or key
    version,          ///< protocol version not spoken
    unknown_protocol, ///< no such pool
    busy,             ///< waited, no worker came free
    overloaded,       ///< queue full, or max_clients reached
    spawn_failed,     ///< the pool cannot start workers now
    no_such_lease,    ///< unknown, ended, or not yours
    denied,           ///< peer credentials not allowed
    exists,           ///< REGISTER of a pool that exists
    shutting_down,    ///< the broker is stopping
};

/// The wire spelling, e.g. "spawn-failed".
std::string_view to_string(FailCode code);
std::optional<FailCode> parse_fail_code(std::string_view text);

} // namespace foreman::protocol
