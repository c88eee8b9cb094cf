#include "broker/log.hpp"

#include <atomic>
#include <string>
#include <unistd.h>

namespace foreman::broker {
namespace {
std::atomic<LogLevel> threshold{LogLevel::info};

std::string_view name(LogLevel level) {
    switch (level) {
    case LogLevel::debug: return "debug";
    case LogLevel::info: return "info";
    case LogLevel::warning: return "warning";
    case LogLevel::error: return "error";
    }
    return "info";
}
} // namespace

void set_log_level(LogLevel level) { threshold = level; }
LogLevel log_level() { return threshold; }

bool parse_log_level(std::string_view text, LogLevel& level) {
    for (auto l : {LogLevel::debug, LogLevel::info, LogLevel::warning, LogLevel::error})
        if (name(l) == text) {
            level = l;
            return true;
        }
    return false;
}

void log(LogLevel level, std::string_view text) {
    if (level < threshold.load(std::memory_order_relaxed)) return;
    std::string line;
    line.reserve(text.size() + 24);
    line.append("foreman: ").append(name(level)).append(": ").append(text);
    log_raw(line);
}

void log_raw(std::string_view text) {
    std::string line(text);
    line.push_back('\n');
    const char* p = line.data();
    std::size_t left = line.size();
    while (left > 0) {
        ssize_t n = ::write(STDERR_FILENO, p, left);
        if (n < 0) return; // nowhere to report a failing stderr
        p += n;
        left -= static_cast<std::size_t>(n);
    }
}

} // namespace foreman::broker
