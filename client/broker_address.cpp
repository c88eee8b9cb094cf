#include "client/broker_address.hpp"

#include "protocol/default_paths.hpp"

#include <cstdlib>
#include <unistd.h>

namespace foreman::client {

std::string broker_address(const std::optional<std::string>& socket_option) {
    if (socket_option && !socket_option->empty()) return *socket_option;
    if (const char* env = std::getenv("FOREMAN_SOCKET"); env && *env) return env;
    std::optional<std::string> xdg;
    if (const char* x = std::getenv("XDG_RUNTIME_DIR")) xdg = x;
    return protocol::default_control_socket(protocol::default_runtime_dir(xdg, ::geteuid()));
}

} // namespace foreman::client
