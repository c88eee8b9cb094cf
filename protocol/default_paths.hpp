#pragma once
// Default locations of PROTOCOL.md, computed from what the caller read from
// the environment, so that broker and clients agree and tests need no setenv.

#include <optional>
#include <string>
#include <sys/types.h>

namespace foreman::protocol {

/// `$XDG_RUNTIME_DIR/foreman`, else `/run/foreman` for root, else `/tmp/foreman-<uid>`.
std::string default_runtime_dir(const std::optional<std::string>& xdg_runtime_dir, uid_t uid);

/// `<runtime_dir>/foreman.sock`.
std::string default_control_socket(const std::string& runtime_dir);

} // namespace foreman::protocol
