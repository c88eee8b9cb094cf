// Fuzzes the notify-datagram parser (protocol/notify_message.hpp): any bytes
// a worker (or anything that can reach the notify socket) sends, checked
// against the rules of its header read line by line.

#include "fuzz/fuzz_check.hpp"
#include "protocol/clean_text.hpp"
#include "protocol/notify_message.hpp"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace {

using foreman::protocol::NotifyMessage;
using foreman::protocol::parse_notify;

/// The error names what is wrong and echoes at most a little of the input.
constexpr std::size_t max_error_text = 100;

/// What parse_notify must answer, worked out line by line.
struct Expected {
    bool valid = true;
    NotifyMessage message;
};

Expected expected(std::string_view datagram) {
    Expected e;
    if (datagram.empty() || datagram.find('\0') != std::string_view::npos) {
        e.valid = false;
        return e;
    }
    std::size_t start = 0;
    while (start <= datagram.size()) {
        std::size_t end = datagram.find('\n', start);
        if (end == std::string_view::npos) end = datagram.size();
        std::string_view line = datagram.substr(start, end - start);
        start = end + 1;
        if (line.empty()) continue;
        if (line.front() == '=' || line.find('=') == std::string_view::npos) {
            e.valid = false;
            return e;
        }
        if (line == "READY=1") e.message.ready = true;
        if (line == "WATCHDOG=1") e.message.watchdog = true;
        if (line == "STOPPING=1") e.message.stopping = true;
        if (line.substr(0, 7) == "STATUS=") e.message.status = std::string(line.substr(7));
    }
    return e;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string_view datagram(reinterpret_cast<const char*>(data), size);
    std::string error;
    auto got = parse_notify(datagram, error);
    Expected want = expected(datagram);

    FUZZ_CHECK(got.has_value() == want.valid);
    if (!got) {
        FUZZ_CHECK(!error.empty() && error.size() <= max_error_text);
        FUZZ_CHECK(foreman::protocol::is_clean_text(error)); // it goes into the log
        return 0;
    }
    FUZZ_CHECK(got->ready == want.message.ready);
    FUZZ_CHECK(got->watchdog == want.message.watchdog);
    FUZZ_CHECK(got->stopping == want.message.stopping);
    // STATUS= is one line of the datagram, shown in STATUS json: the raw
    // text with each byte that is not clean UTF-8 text made '?', so clean.
    FUZZ_CHECK(got->status.has_value() == want.message.status.has_value());
    if (got->status) {
        const std::string& shown = *got->status;
        const std::string& raw = *want.message.status;
        FUZZ_CHECK(shown.size() == raw.size());
        for (std::size_t i = 0; i < shown.size() && i < raw.size(); ++i)
            FUZZ_CHECK(shown[i] == raw[i] || shown[i] == '?');
        FUZZ_CHECK(foreman::protocol::is_clean_text(shown));
    }
    return 0;
}
