#pragma once
// Text that other people's bytes put into what the broker shows: a LEASE's
// user= and a worker's STATUS= end up in STATUS json and in log lines. One
// invalid UTF-8 byte there made every client's STATUS unparseable (JSON
// parsers refuse it), so such text is refused (user=) or cleaned (STATUS=).

#include <string>
#include <string_view>

namespace foreman::protocol {

/// Valid UTF-8 (no overlong forms, no surrogates, nothing above U+10FFFF)
/// holding no control character (C0 and DEL).
bool is_clean_text(std::string_view text);

/// `text` with each byte that breaks is_clean_text (an invalid UTF-8
/// sequence's bytes, a control character) replaced by '?'.
std::string clean_text(std::string_view text);

} // namespace foreman::protocol
