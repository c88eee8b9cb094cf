#pragma once
// The control protocol's lines (PROTOCOL.md "Control protocol"): splitting a
// byte stream into lines, reading requests and replies, writing them. Pure:
// sessions and clients move bytes, this decides what they mean, so unit
// tests and a fuzzer can drive every path.

#include "protocol/end_reason.hpp"
#include "protocol/fail_code.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace foreman::protocol {

inline constexpr std::uint32_t protocol_version = 1000;
/// A request line longer than this (without its '\n') ends the connection.
inline constexpr std::size_t max_line_length = 65536;
/// The broker's lines have no such limit in the contract (STATUS grows with
/// the workers: about 100 bytes each); clients accept up to this.
inline constexpr std::size_t max_reply_length = std::size_t{64} << 20;

/// Splits a byte stream into '\n'-terminated lines. Feed it bytes, take lines.
class LineReader {
public:
    LineReader() = default;
    explicit LineReader(std::size_t max_line) : max_line_(max_line) {}

    enum class Result {
        line,      ///< `line` holds the next line, without '\n'
        need_more, ///< no complete line buffered
        too_long,  ///< more than the maximum line length without '\n'
    };

    /// Room for `n` more bytes at the end of the buffer; call commit(k) with
    /// how many were written.
    char* prepare(std::size_t n);
    void commit(std::size_t n);
    void feed(std::string_view bytes);
    /// The next line; `line` stays valid until the next prepare/feed.
    Result next(std::string_view& line);
    std::size_t buffered() const { return buf_.size() - start_; }

private:
    std::string buf_;
    std::size_t start_ = 0;   ///< first byte not yet returned
    std::size_t scanned_ = 0; ///< bytes from start_ known to hold no '\n'
    std::size_t prepared_ = 0; ///< bytes added by the last prepare()
    std::size_t max_line_ = max_line_length;
};

/// 1 to 64 bytes of [A-Za-z0-9_.-].
bool is_valid_tag(std::string_view tag);
/// A strict decimal unsigned number (no sign, no blanks, no overflow).
bool parse_u64(std::string_view text, std::uint64_t& value);

// ---- handshake ---------------------------------------------------------------

/// "VERSION\tforeman\t1000\n".
std::string version_line();
/// The version of a "VERSION\tforeman\t<N>" line, or nullopt.
std::optional<std::uint64_t> parse_version_line(std::string_view line);

// ---- requests (client → broker) --------------------------------------------

enum class Verb { lease, renew, release, status, register_pool, unregister_pool };

struct LeaseArgs {
    std::string protocol;
    std::string user;
    std::optional<std::uint64_t> ttl_ms;
    std::optional<std::uint64_t> wait_ms;
    std::optional<std::uint64_t> version;
    bool detach = false;
};

struct Request {
    Verb verb;
    std::string tag;
    LeaseArgs lease;          ///< LEASE
    std::uint64_t lease_id = 0; ///< RENEW, RELEASE
    std::string protocol;     ///< REGISTER, UNREGISTER
    std::vector<std::pair<std::string, std::string>> keys; ///< REGISTER's key=value
};

/// Why a line is not a request; `tag` is "*" when no valid tag was read.
struct RequestError {
    std::string tag;
    FailCode code;
    std::string text;
};

std::variant<Request, RequestError> parse_request(std::string_view line);

// ---- replies (broker → client) -----------------------------------------------

/// "OK\t<tag>[\t<field>]...\n".
std::string ok_line(std::string_view tag, std::initializer_list<std::string_view> fields = {});
/// "FAIL\t<tag>\t<code>\t<text>\n"; tabs and newlines in `text` become spaces.
std::string fail_line(std::string_view tag, FailCode code, std::string_view text);
/// "EXPIRED\t<lease_id>\t<reason>\n".
std::string expired_line(std::uint64_t lease, EndReason reason);

struct Reply {
    enum class Kind { ok, fail, expired, version };
    Kind kind;
    std::string tag;                 ///< ok, fail
    std::vector<std::string> fields; ///< ok: the fields after the tag
    FailCode code = FailCode::bad_request; ///< fail
    std::string text;                ///< fail
    std::uint64_t lease = 0;         ///< expired
    EndReason reason = EndReason::ttl; ///< expired
    std::uint64_t version = 0;       ///< version
};

/// A line from the broker, or nullopt with `error` saying what is wrong.
std::optional<Reply> parse_reply(std::string_view line, std::string& error);

/// Splits on '\t' (no field holds a tab).
std::vector<std::string_view> split_fields(std::string_view line);

} // namespace foreman::protocol
