#pragma once
// The broker's log: one line per event on stderr, "foreman: <level>: <text>"
// (worker output: "<protocol>[<pid>]: <line>"). Each line is one write(2),
// so lines from several threads never interleave.

#include <string_view>

namespace foreman::broker {

enum class LogLevel { debug, info, warning, error };

/// Lines below this level are dropped (default: info; `--log-level`).
void set_log_level(LogLevel level);
LogLevel log_level();
bool parse_log_level(std::string_view text, LogLevel& level);

void log(LogLevel level, std::string_view text);
inline void log_debug(std::string_view text) { log(LogLevel::debug, text); }
inline void log_info(std::string_view text) { log(LogLevel::info, text); }
inline void log_warning(std::string_view text) { log(LogLevel::warning, text); }
inline void log_error(std::string_view text) { log(LogLevel::error, text); }
/// A line written as it is, without the "foreman: <level>: " prefix.
void log_raw(std::string_view line);

} // namespace foreman::broker
