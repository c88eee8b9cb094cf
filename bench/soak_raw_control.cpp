#include "bench/soak_raw_control.hpp"

#include "client/socket_io.hpp"

#include <cerrno>
#include <poll.h>
#include <sys/socket.h>

namespace foreman::bench {

RawControl::RawControl(const std::string& socket) : fd_(client::connect_unix(socket)) {}

bool RawControl::send(std::string_view bytes) {
    while (!bytes.empty()) {
        ssize_t n = ::send(fd_.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return false;
        bytes.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
}

std::optional<std::string> RawControl::line(Clock::time_point deadline) {
    for (;;) {
        if (auto nl = buf_.find('\n'); nl != std::string::npos) {
            std::string l = buf_.substr(0, nl);
            buf_.erase(0, nl + 1);
            return l;
        }
        if (!fill(deadline)) return std::nullopt;
    }
}

bool RawControl::closed(Clock::time_point deadline) {
    if (!buf_.empty()) return false;
    return !fill(deadline) && eof_;
}

bool RawControl::fill(Clock::time_point deadline) {
    for (;;) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
        if (left <= 0) return false;
        pollfd p{fd_.get(), POLLIN, 0};
        int r = ::poll(&p, 1, static_cast<int>(left));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return false;
        char chunk[4096];
        ssize_t n = ::recv(fd_.get(), chunk, sizeof chunk, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            eof_ = true; // end of file, or ECONNRESET: the broker closed with our bytes unread
            return false;
        }
        buf_.append(chunk, static_cast<std::size_t>(n));
        return true;
    }
}

std::string over_long_line_refused(RawControl& raw, std::size_t length, RawControl::Clock::time_point deadline,
                                   bool& answered) {
    raw.send(std::string(length, 'x') + "\n");
    auto reply = raw.line(deadline);
    answered = reply.has_value();
    if (reply != "FAIL\t*\tbad-request\tline too long")
        return "an over-long line got '" + reply.value_or("<nothing>").substr(0, 80) + "', not FAIL * line too long";
    if (!raw.closed(deadline)) return "the connection stayed open after an over-long line";
    return {};
}

} // namespace foreman::bench
