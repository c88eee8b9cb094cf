#pragma once
// Socket activation of the control socket: systemd (foreman.socket) or
// systemd-socket-activate binds control_socket and passes it as fd 3 with
// LISTEN_FDS=1 and LISTEN_PID=<our pid>; the broker then listens on that
// descriptor instead of binding, and leaves the file to whoever bound it.

#include "spawn/unique_fd.hpp"

#include <string>

namespace foreman::broker {

/// The listening socket the service manager passed, checked to be an
/// AF_UNIX SOCK_STREAM socket that listens at `control_socket`, made
/// close-on-exec (no worker may hold it); empty when none was passed
/// (LISTEN_FDS unset, or LISTEN_PID another process's). Unsets LISTEN_FDS,
/// LISTEN_PID and LISTEN_FDNAMES, so call it before any thread starts.
/// Throws std::runtime_error saying what is wrong with what was passed.
spawn::unique_fd inherited_control_socket(const std::string& control_socket);

} // namespace foreman::broker
