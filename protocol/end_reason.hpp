#pragma once
// Why a lease ended. The first five are the reasons of an EXPIRED event;
// the last two end a lease without telling its holder (it asked, or it is gone).

#include <optional>
#include <string_view>

namespace foreman::protocol {

enum class EndReason {
    ttl,           ///< not renewed within its ttl
    worker_ready,  ///< notify=foreman worker said READY=1 while leased
    worker_exit,   ///< the worker died, or was killed as hung
    processtime,   ///< the lease outlived max_processtime_secs
    shutdown,      ///< the broker is stopping
    released,      ///< RELEASE by its holder
    holder_closed, ///< the holder's connection closed (lease not detached)
};

/// Whether the holder is told with an EXPIRED event.
constexpr bool is_expiry(EndReason r) {
    return r != EndReason::released && r != EndReason::holder_closed;
}

/// The wire spelling, e.g. "worker-ready".
std::string_view to_string(EndReason reason);
std::optional<EndReason> parse_end_reason(std::string_view text);

} // namespace foreman::protocol
