#pragma once
// A control connection spoken to byte by byte, for what the client library
// would refuse to send: garbage, a wrong first line, a line over the limit.

#include "spawn/unique_fd.hpp"

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace foreman::bench {

class RawControl {
public:
    using Clock = std::chrono::steady_clock;

    /// Connects (no handshake). Throws client::Error (io).
    explicit RawControl(const std::string& socket);

    /// Writes all of `bytes`; false when the broker closed first (it may,
    /// once it has answered).
    bool send(std::string_view bytes);
    /// The next line without its '\n'; nullopt at end of file, on an error,
    /// or at `deadline`.
    std::optional<std::string> line(Clock::time_point deadline);
    /// Whether the broker closed the connection (end of file or a reset)
    /// by `deadline`, with nothing more to read.
    bool closed(Clock::time_point deadline);

private:
    bool fill(Clock::time_point deadline);

    spawn::unique_fd fd_;
    std::string buf_;
    bool eof_ = false;
};

/// After the handshake, sends one line of `length` bytes (more than the
/// broker accepts): "" when the broker answered `FAIL * bad-request line too
/// long` and closed, else what happened instead. `answered`: a reply came.
std::string over_long_line_refused(RawControl& raw, std::size_t length, RawControl::Clock::time_point deadline,
                                   bool& answered);

} // namespace foreman::bench
