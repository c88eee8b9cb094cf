#pragma once
// Reading one pool out of a STATUS reply (docs/protocol.md "STATUS").

#include <boost/json/value.hpp>

#include <cstdint>
#include <string>

namespace foreman::bench {

/// The pool object of `protocol` in a STATUS json, or nullptr.
inline const boost::json::object* find_pool(const boost::json::value& status, const std::string& protocol) {
    for (auto& pool : status.at("pools").as_array())
        if (pool.at("protocol").as_string() == protocol) return &pool.as_object();
    return nullptr;
}

/// LEASEs waiting in the pool.
inline std::int64_t pool_queued(const boost::json::value& status, const std::string& protocol) {
    auto* pool = find_pool(status, protocol);
    return pool ? pool->at("queued").to_number<std::int64_t>() : 0;
}

/// Workers of the pool in state `state` ("idle", "leased", ...).
inline int pool_workers_in(const boost::json::value& status, const std::string& protocol, const std::string& state) {
    auto* pool = find_pool(status, protocol);
    if (!pool) return 0;
    int n = 0;
    for (auto& w : pool->at("workers").as_array())
        if (w.at("state").as_string() == state) ++n;
    return n;
}

} // namespace foreman::bench
