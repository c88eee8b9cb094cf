#pragma once
// The optional keys of a LEASE request (PROTOCOL.md "Control protocol").

#include "protocol/control_line.hpp"

#include <cstdint>
#include <optional>
#include <string>

namespace foreman::client {

struct LeaseOptions {
    std::string user;                      ///< `user=`; empty: not sent
    std::optional<std::uint64_t> ttl_ms;   ///< `ttl_ms=`: 100 .. the pool's lease_ttl_ms
    std::optional<std::uint64_t> wait_ms;  ///< `wait_ms=`: 0 fails at once; unset: the pool's queue_timeout_ms
    std::optional<std::uint64_t> version;  ///< `version=`: the protocol version the pool must serve
    bool detach = false;                   ///< `detach=1`: the lease outlives this connection
};

/// A LEASE request (without a tag) for `protocol` with `options`.
inline protocol::Request lease_request(const std::string& protocol, const LeaseOptions& options) {
    protocol::Request r{};
    r.verb = protocol::Verb::lease;
    r.lease.protocol = protocol;
    r.lease.user = options.user;
    r.lease.ttl_ms = options.ttl_ms;
    r.lease.wait_ms = options.wait_ms;
    r.lease.version = options.version;
    r.lease.detach = options.detach;
    return r;
}

} // namespace foreman::client
