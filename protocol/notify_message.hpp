#pragma once
// One sd_notify datagram: newline-separated KEY=VALUE assignments (systemd's
// format). Pure: the notify socket hands the bytes in.

#include <optional>
#include <string>
#include <string_view>

namespace foreman::protocol {

struct NotifyMessage {
    bool ready = false;    ///< READY=1
    bool watchdog = false; ///< WATCHDOG=1
    bool stopping = false; ///< STOPPING=1
    std::optional<std::string> status; ///< STATUS=<text>, cleaned (clean_text.hpp)
};

/// The message, or nullopt with `error` set when the datagram is malformed
/// (empty, a NUL byte, a line without '=', an empty key). Keys foreman does
/// not use (MAINPID=, RELOADING=, BARRIER=...) are accepted and ignored, as
/// systemd does.
std::optional<NotifyMessage> parse_notify(std::string_view datagram, std::string& error);

} // namespace foreman::protocol
