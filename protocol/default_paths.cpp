#include "protocol/default_paths.hpp"

namespace foreman::protocol {

std::string default_runtime_dir(const std::optional<std::string>& xdg_runtime_dir, uid_t uid) {
    if (xdg_runtime_dir && !xdg_runtime_dir->empty()) return *xdg_runtime_dir + "/foreman";
    if (uid == 0) return "/run/foreman";
    return "/tmp/foreman-" + std::to_string(uid);
}

std::string default_control_socket(const std::string& runtime_dir) {
    return runtime_dir + "/foreman.sock";
}

} // namespace foreman::protocol
