#pragma once
// Where a client finds the broker: --socket, then FOREMAN_SOCKET, then the
// default control socket path.

#include <optional>
#include <string>

namespace foreman::client {

std::string broker_address(const std::optional<std::string>& socket_option);

} // namespace foreman::client
