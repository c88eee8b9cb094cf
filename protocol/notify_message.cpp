#include "protocol/notify_message.hpp"

#include "protocol/clean_text.hpp"

namespace foreman::protocol {

std::optional<NotifyMessage> parse_notify(std::string_view datagram, std::string& error) {
    if (datagram.empty()) {
        error = "empty datagram";
        return std::nullopt;
    }
    if (datagram.find('\0') != std::string_view::npos) {
        error = "NUL byte in datagram";
        return std::nullopt;
    }
    NotifyMessage m;
    while (!datagram.empty()) {
        auto nl = datagram.find('\n');
        std::string_view line = datagram.substr(0, nl);
        datagram = nl == std::string_view::npos ? std::string_view{} : datagram.substr(nl + 1);
        if (line.empty()) continue; // sd_notify("READY=1\n") ends with a newline
        auto eq = line.find('=');
        if (eq == std::string_view::npos || eq == 0) {
            // Quoted cleaned: the reason goes into the log, where a
            // stranger's escape sequences or line breaks have no business.
            error = "not KEY=VALUE: '" + clean_text(line.substr(0, 64)) + "'";
            return std::nullopt;
        }
        std::string_view key = line.substr(0, eq), value = line.substr(eq + 1);
        if (key == "READY") m.ready = m.ready || value == "1";
        else if (key == "WATCHDOG") m.watchdog = m.watchdog || value == "1";
        else if (key == "STOPPING") m.stopping = m.stopping || value == "1";
        else if (key == "STATUS") m.status = clean_text(value); // shown in STATUS json: clean_text.hpp
    }
    return m;
}

} // namespace foreman::protocol
