#include "protocol/clean_text.hpp"

namespace foreman::protocol {
namespace {

/// Length of the valid UTF-8 sequence at `s[i]` that is not a control
/// character, or 0.
std::size_t clean_sequence(std::string_view s, std::size_t i) {
    auto byte = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
    unsigned char c = byte(i);
    if (c < 0x20 || c == 0x7f) return 0;
    if (c < 0x80) return 1;
    std::size_t len;
    unsigned char lo = 0x80, hi = 0xbf; // the range of the second byte
    if (c >= 0xc2 && c <= 0xdf) len = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0) lo = 0xa0; // overlong
        if (c == 0xed) hi = 0x9f; // surrogates
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0) lo = 0x90; // overlong
        if (c == 0xf4) hi = 0x8f; // above U+10FFFF
    } else {
        return 0; // a continuation byte, 0xc0, 0xc1, 0xf5..0xff
    }
    if (i + len > s.size()) return 0;
    if (byte(i + 1) < lo || byte(i + 1) > hi) return 0;
    for (std::size_t k = 2; k < len; ++k)
        if (byte(i + k) < 0x80 || byte(i + k) > 0xbf) return 0;
    return len;
}

} // namespace

bool is_clean_text(std::string_view text) {
    for (std::size_t i = 0; i < text.size();) {
        std::size_t n = clean_sequence(text, i);
        if (n == 0) return false;
        i += n;
    }
    return true;
}

std::string clean_text(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    for (std::size_t i = 0; i < text.size();) {
        std::size_t n = clean_sequence(text, i);
        if (n == 0) {
            out.push_back('?');
            ++i;
        } else {
            out.append(text.substr(i, n));
            i += n;
        }
    }
    return out;
}

} // namespace foreman::protocol
