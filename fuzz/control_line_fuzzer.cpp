// Fuzzes the control-line codec (protocol/control_line.hpp) the way the
// broker and the client drive it: bytes arrive in chunks of any size, a
// LineReader cuts them into lines, every line goes through parse_request
// (broker side) and parse_reply (client side), and whatever they accept must
// read back the same once written out again.

#include "client/request_line.hpp"
#include "fuzz/fuzz_check.hpp"
#include "protocol/control_line.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <random>
#include <string>
#include <string_view>
#include <vector>

namespace {

using namespace foreman::protocol;

// ---- properties of single lines ---------------------------------------------------

/// An error or reply text echoes a little of the input, never all of it:
/// a 64 KiB junk line must not come back as a 64 KiB FAIL line.
constexpr std::size_t max_error_text = 160;

bool holds_tab_or_newline(std::string_view s) { return s.find_first_of("\t\n") != std::string_view::npos; }

/// No control character: error texts end up in FAIL lines and in logs.
bool printable(std::string_view s) {
    for (char c : s)
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) return false;
    return true;
}

bool is_one_line(std::string_view s) { return !s.empty() && s.find('\n') == s.size() - 1; }

bool same_request(const Request& a, const Request& b) {
    return a.verb == b.verb && a.tag == b.tag && a.lease.protocol == b.lease.protocol && a.lease.user == b.lease.user &&
           a.lease.ttl_ms == b.lease.ttl_ms && a.lease.wait_ms == b.lease.wait_ms &&
           a.lease.version == b.lease.version && a.lease.detach == b.lease.detach && a.lease_id == b.lease_id &&
           a.protocol == b.protocol && a.keys == b.keys;
}

std::string format(const Request& r) {
    try {
        return foreman::client::format_request(r);
    } catch (const std::exception& e) {
        // A request the broker accepted that the client library cannot write.
        std::fprintf(stderr, "format_request refused a parsed request: %s\n", e.what());
        FUZZ_CHECK(!"format_request throws on a request parse_request accepted");
    }
    return {};
}

void check_accepted_request(std::string_view line, const Request& r) {
    FUZZ_CHECK(is_valid_tag(r.tag));
    FUZZ_CHECK(!holds_tab_or_newline(r.lease.protocol));
    FUZZ_CHECK(!holds_tab_or_newline(r.lease.user));
    FUZZ_CHECK(!holds_tab_or_newline(r.protocol));
    switch (r.verb) {
    case Verb::lease: FUZZ_CHECK(!r.lease.protocol.empty()); break;
    case Verb::register_pool:
    case Verb::unregister_pool: FUZZ_CHECK(!r.protocol.empty()); break;
    case Verb::renew:
    case Verb::release:
    case Verb::status: break;
    }
    for (const auto& [key, value] : r.keys) {
        FUZZ_CHECK(!key.empty() && key.find('=') == std::string::npos);
        FUZZ_CHECK(!holds_tab_or_newline(key) && !holds_tab_or_newline(value));
    }

    // Written out by the client library and read back: the same request, on
    // one line no longer than the one it came from (so within max_line_length).
    std::string again = format(r);
    FUZZ_CHECK(is_one_line(again));
    FUZZ_CHECK(again.size() <= line.size() + 1);
    again.pop_back();
    auto reparsed = parse_request(again);
    FUZZ_CHECK(std::holds_alternative<Request>(reparsed));
    FUZZ_CHECK(same_request(r, std::get<Request>(reparsed)));
}

void check_refused_request(const RequestError& e) {
    FUZZ_CHECK(e.tag == "*" || is_valid_tag(e.tag));
    FUZZ_CHECK(e.code == FailCode::bad_request);
    FUZZ_CHECK(!e.text.empty() && e.text.size() <= max_error_text && printable(e.text));

    // The broker answers with this FAIL line; the client must read it back.
    std::string reply = fail_line(e.tag, e.code, e.text);
    FUZZ_CHECK(is_one_line(reply));
    reply.pop_back();
    std::string error;
    auto r = parse_reply(reply, error);
    FUZZ_CHECK(r && r->kind == Reply::Kind::fail);
    FUZZ_CHECK(r->tag == e.tag && r->code == e.code && r->text == e.text);
}

void check_request(std::string_view line) {
    auto parsed = parse_request(line);
    if (auto* r = std::get_if<Request>(&parsed)) check_accepted_request(line, *r);
    else check_refused_request(std::get<RequestError>(parsed));
}

void check_reply(std::string_view line) {
    std::string error;
    auto r = parse_reply(line, error);
    if (!r) {
        FUZZ_CHECK(!error.empty() && error.size() <= max_error_text && printable(error));
        return;
    }
    std::string again;
    switch (r->kind) {
    case Reply::Kind::ok:
        // Nothing dropped, nothing invented.
        again = "OK\t" + r->tag;
        for (const auto& f : r->fields) again.append("\t").append(f);
        FUZZ_CHECK(again == line);
        return;
    case Reply::Kind::fail: {
        FUZZ_CHECK(!holds_tab_or_newline(r->text));
        again = fail_line(r->tag, r->code, r->text);
        FUZZ_CHECK(is_one_line(again) && again.size() == line.size() + 1);
        again.pop_back();
        auto back = parse_reply(again, error);
        FUZZ_CHECK(back && back->kind == Reply::Kind::fail && back->tag == r->tag && back->code == r->code);
        return;
    }
    case Reply::Kind::expired: {
        FUZZ_CHECK(is_expiry(r->reason));
        again = expired_line(r->lease, r->reason);
        FUZZ_CHECK(is_one_line(again));
        again.pop_back();
        auto back = parse_reply(again, error);
        FUZZ_CHECK(back && back->kind == Reply::Kind::expired && back->lease == r->lease &&
                   back->reason == r->reason);
        return;
    }
    case Reply::Kind::version:
        FUZZ_CHECK(line.substr(0, 16) == "VERSION\tforeman\t");
        FUZZ_CHECK(parse_version_line(line) == r->version);
        return;
    }
    FUZZ_CHECK(!"parse_reply returned an unknown kind");
}

// ---- properties of the line reader -------------------------------------------------------

/// What a LineReader must yield for a whole stream: its lines in order, then
/// too_long if a line (finished or not) outgrows the limit.
struct Split {
    std::vector<std::string_view> lines;
    bool too_long = false;
    std::size_t rest = 0; ///< bytes after the last newline
};

Split expected_split(std::string_view bytes, std::size_t max_line) {
    Split s;
    for (;;) {
        auto nl = bytes.find('\n');
        if (nl == std::string_view::npos) {
            s.too_long = bytes.size() > max_line;
            s.rest = bytes.size();
            return s;
        }
        if (nl > max_line) {
            s.too_long = true;
            return s;
        }
        s.lines.push_back(bytes.substr(0, nl));
        bytes.remove_prefix(nl + 1);
    }
}

/// Chunk sizes and spare room depend on the input, so the fuzzer varies them
/// as it varies the bytes; the same input always replays the same way.
std::uint64_t fnv1a(std::string_view bytes) {
    std::uint64_t h = 14695981039346656037ull;
    for (char c : bytes) h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ull;
    return h;
}

/// Feeds `bytes` to a reader with limit `max_line`, through prepare/commit in
/// chunks of random size (or feed() in one piece), taking lines after each
/// chunk as a session does; checks it yields exactly `expected_split`.
/// Returns the lines read.
std::vector<std::string> read_lines(std::string_view bytes, std::size_t max_line, bool chunked,
                                    std::uint64_t seed) {
    const Split want = expected_split(bytes, max_line);
    LineReader reader(max_line);
    std::mt19937_64 rng(seed);
    std::vector<std::string> got;
    bool too_long = false;

    std::size_t fed = 0;
    while (!too_long && (fed < bytes.size() || fed == 0)) {
        std::size_t n = bytes.size() - fed;
        if (chunked) {
            switch (rng() % 3) {
            case 0: n = std::min<std::size_t>(n, 1); break;
            case 1: n = std::min<std::size_t>(n, 1 + rng() % 16); break;
            default: n = std::min<std::size_t>(n, 1 + rng() % 4096); break;
            }
            // A read may fill less than the room it was given: commit() must
            // drop the rest, here newlines that would make false lines.
            std::size_t room = n + rng() % 8;
            char* p = reader.prepare(room);
            std::memcpy(p, bytes.data() + fed, n);
            std::memset(p + n, '\n', room - n);
            reader.commit(n);
        } else {
            reader.feed(bytes.substr(fed, n));
        }
        fed += n;

        std::string_view line;
        for (;;) {
            auto r = reader.next(line);
            if (r == LineReader::Result::need_more) {
                // Never holds more than one line's worth waiting for its newline.
                FUZZ_CHECK(reader.buffered() <= max_line);
                break;
            }
            if (r == LineReader::Result::too_long) {
                // Reported again if asked again: the session may look twice.
                FUZZ_CHECK(reader.next(line) == LineReader::Result::too_long);
                too_long = true;
                break;
            }
            FUZZ_CHECK(line.size() <= max_line && line.find('\n') == std::string_view::npos);
            FUZZ_CHECK(got.size() < want.lines.size() && line == want.lines[got.size()]);
            got.emplace_back(line);
        }
        if (bytes.empty()) break;
    }
    FUZZ_CHECK(too_long == want.too_long);
    FUZZ_CHECK(got.size() == want.lines.size());
    if (!too_long) FUZZ_CHECK(reader.buffered() == want.rest);
    return got;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string_view bytes(reinterpret_cast<const char*>(data), size);
    std::uint64_t h = fnv1a(bytes);

    // The broker's limit, in one piece and in chunks; then a small limit, so
    // short inputs reach too_long too.
    auto lines = read_lines(bytes, max_line_length, false, h);
    read_lines(bytes, max_line_length, true, h);
    read_lines(bytes, h % 100, true, h >> 8);

    for (const auto& line : lines) {
        check_request(line);
        check_reply(line);
    }
    return 0;
}
