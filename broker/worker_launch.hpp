#pragma once
// How one worker of a pool is started (PROTOCOL.md "Worker contract"): its
// argv with placeholders replaced and its environment. Pure, so every rule of
// the contract is a unit test; broker.cpp adds the descriptors.

#include "broker/config.hpp"
#include "spawn/launch_spec.hpp"

#include <string>
#include <string_view>
#include <vector>

namespace foreman::broker {

/// Where a worker lives and whom it serves.
struct WorkerPlacement {
    std::string id;            ///< FOREMAN_WORKER_ID and {worker}
    std::string socket_path;   ///< FOREMAN_SOCKET and {socket}
    std::string user;          ///< per_user pools: FOREMAN_USER and {user}
    std::string notify_socket; ///< NOTIFY_SOCKET, when the pool's notify is not none
};

/// `arg` with every {socket}, {protocol}, {worker} and {user} replaced.
std::string expand_placeholders(std::string_view arg, const PoolConfig& pool, const WorkerPlacement& where);

/// The broker's own environment less what would mislead a worker: systemd's
/// activation and notify variables and FOREMAN_*, which the launch sets anew.
std::vector<std::string> inheritable_environment(const char* const* environ);

/// argv, environment and flags of the launch; descriptors and credentials
/// are left for the caller.
spawn::LaunchSpec make_launch_spec(const PoolConfig& pool, const WorkerPlacement& where,
                                   const std::vector<std::string>& inherited_env);

} // namespace foreman::broker
