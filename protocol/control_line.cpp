#include "protocol/control_line.hpp"

#include "protocol/clean_text.hpp"

#include <algorithm>
#include <charconv>
#include <cstring>

namespace foreman::protocol {

// ---- LineReader ------------------------------------------------------------------

char* LineReader::prepare(std::size_t n) {
    // Drop what was returned before growing, so the buffer stays one line's size.
    if (start_ > 0 && (start_ == buf_.size() || start_ > buf_.size() / 2)) {
        buf_.erase(0, start_);
        start_ = 0;
    }
    std::size_t old = buf_.size();
    buf_.resize(old + n);
    prepared_ = n;
    return buf_.data() + old;
}

void LineReader::commit(std::size_t n) {
    // prepare() grew the buffer by prepared_; keep only what was written.
    buf_.resize(buf_.size() - prepared_ + std::min(n, prepared_));
    prepared_ = 0;
}

void LineReader::feed(std::string_view bytes) {
    char* p = prepare(bytes.size());
    std::memcpy(p, bytes.data(), bytes.size());
    commit(bytes.size());
}

LineReader::Result LineReader::next(std::string_view& line) {
    std::string_view pending(buf_.data() + start_, buf_.size() - start_);
    auto nl = pending.find('\n', scanned_);
    if (nl == std::string_view::npos) {
        scanned_ = pending.size();
        return pending.size() > max_line_ ? Result::too_long : Result::need_more;
    }
    if (nl > max_line_) return Result::too_long;
    line = pending.substr(0, nl);
    start_ += nl + 1;
    scanned_ = 0;
    return Result::line;
}

// ---- small pieces ------------------------------------------------------------------

bool is_valid_tag(std::string_view tag) {
    if (tag.empty() || tag.size() > 64) return false;
    for (char c : tag) {
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
                  c == '.' || c == '-';
        if (!ok) return false;
    }
    return true;
}

bool parse_u64(std::string_view text, std::uint64_t& value) {
    if (text.empty() || text.size() > 20) return false;
    for (char c : text)
        if (c < '0' || c > '9') return false;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    return ec == std::errc() && end == text.data() + text.size();
}

std::vector<std::string_view> split_fields(std::string_view line) {
    std::vector<std::string_view> fields;
    for (;;) {
        auto tab = line.find('\t');
        fields.push_back(line.substr(0, tab));
        if (tab == std::string_view::npos) break;
        line.remove_prefix(tab + 1);
    }
    return fields;
}

std::string version_line() { return "VERSION\tforeman\t" + std::to_string(protocol_version) + "\n"; }

std::optional<std::uint64_t> parse_version_line(std::string_view line) {
    auto f = split_fields(line);
    std::uint64_t v = 0;
    if (f.size() != 3 || f[0] != "VERSION" || f[1] != "foreman" || !parse_u64(f[2], v)) return std::nullopt;
    return v;
}

// ---- requests -------------------------------------------------------------------------

namespace {

RequestError bad(std::string_view tag, std::string text) {
    return RequestError{std::string(tag), FailCode::bad_request, std::move(text)};
}

std::string shown(std::string_view s) {
    // Echo at most a little of what the client sent, as clean text: a FAIL
    // line is logged and shown, and must not carry the client's raw bytes.
    std::string out = clean_text(s.substr(0, 64));
    return s.size() > 64 ? out + "..." : out;
}

/// Pool names have the tags' alphabet and length (PROTOCOL.md).
std::string bad_protocol_name(std::string_view name) {
    return "bad protocol name '" + shown(name) + "': 1 to 64 of [A-Za-z0-9_.-]";
}

std::variant<Request, RequestError> parse_lease(Request r, const std::vector<std::string_view>& f) {
    if (f.size() < 3 || f[2].empty()) return bad(r.tag, "LEASE needs a protocol");
    // No pool can have another name: one stray byte (a '\r' from a CRLF
    // client) is a malformed request, not an unknown protocol.
    if (!is_valid_tag(f[2])) return bad(r.tag, bad_protocol_name(f[2]));
    r.lease.protocol = std::string(f[2]);
    bool seen[5] = {};
    for (std::size_t i = 3; i < f.size(); ++i) {
        auto eq = f[i].find('=');
        if (eq == std::string_view::npos) return bad(r.tag, "not key=value: '" + shown(f[i]) + "'");
        std::string_view key = f[i].substr(0, eq), value = f[i].substr(eq + 1);
        static constexpr std::string_view keys[] = {"user", "ttl_ms", "wait_ms", "version", "detach"};
        std::size_t k = 0;
        while (k < 5 && keys[k] != key) ++k;
        if (k == 5) return bad(r.tag, "unknown key '" + shown(key) + "'");
        if (seen[k]) return bad(r.tag, "key '" + std::string(key) + "' given twice");
        seen[k] = true;
        std::uint64_t n = 0;
        switch (k) {
        case 0:
            // It is shown in STATUS json and logged: see clean_text.hpp.
            if (!is_clean_text(value))
                return bad(r.tag, "user is not UTF-8 text without control characters: '" + shown(value) + "'");
            r.lease.user = std::string(value);
            break;
        case 1:
        case 2:
        case 3:
            if (!parse_u64(value, n))
                return bad(r.tag, std::string(key) + " is not a non-negative integer: '" + shown(value) + "'");
            (k == 1 ? r.lease.ttl_ms : k == 2 ? r.lease.wait_ms : r.lease.version) = n;
            break;
        case 4:
            if (value != "0" && value != "1") return bad(r.tag, "detach must be 0 or 1");
            r.lease.detach = value == "1";
            break;
        }
    }
    return r;
}

} // namespace

std::variant<Request, RequestError> parse_request(std::string_view line) {
    auto f = split_fields(line);
    if (f.size() < 2 || !is_valid_tag(f[1])) {
        if (f.size() >= 2) return bad("*", "bad tag '" + shown(f[1]) + "': 1 to 64 of [A-Za-z0-9_.-]");
        return bad("*", "not a request: '" + shown(line) + "'");
    }
    Request r;
    r.tag = std::string(f[1]);
    std::string_view verb = f[0];
    if (verb == "LEASE") {
        r.verb = Verb::lease;
        return parse_lease(std::move(r), f);
    }
    if (verb == "RENEW" || verb == "RELEASE") {
        r.verb = verb == "RENEW" ? Verb::renew : Verb::release;
        if (f.size() != 3 || !parse_u64(f[2], r.lease_id))
            return bad(r.tag, std::string(verb) + " takes one lease id");
        return r;
    }
    if (verb == "STATUS") {
        r.verb = Verb::status;
        if (f.size() != 2) return bad(r.tag, "STATUS takes no argument");
        return r;
    }
    if (verb == "REGISTER") {
        r.verb = Verb::register_pool;
        if (f.size() < 3 || f[2].empty()) return bad(r.tag, "REGISTER needs a protocol");
        r.protocol = std::string(f[2]);
        for (std::size_t i = 3; i < f.size(); ++i) {
            auto eq = f[i].find('=');
            if (eq == std::string_view::npos || eq == 0)
                return bad(r.tag, "not key=value: '" + shown(f[i]) + "'");
            r.keys.emplace_back(std::string(f[i].substr(0, eq)), std::string(f[i].substr(eq + 1)));
        }
        return r;
    }
    if (verb == "UNREGISTER") {
        r.verb = Verb::unregister_pool;
        if (f.size() != 3 || f[2].empty()) return bad(r.tag, "UNREGISTER takes one protocol");
        if (!is_valid_tag(f[2])) return bad(r.tag, bad_protocol_name(f[2]));
        r.protocol = std::string(f[2]);
        return r;
    }
    if (verb == "VERSION") return bad(r.tag, "VERSION was already sent");
    return bad(r.tag, "unknown command '" + shown(verb) + "'");
}

// ---- replies -----------------------------------------------------------------------------

std::string ok_line(std::string_view tag, std::initializer_list<std::string_view> fields) {
    std::string out = "OK\t";
    out.append(tag);
    for (auto f : fields) out.append("\t").append(f);
    out.push_back('\n');
    return out;
}

std::string fail_line(std::string_view tag, FailCode code, std::string_view text) {
    std::string out = "FAIL\t";
    out.append(tag).append("\t").append(to_string(code)).append("\t");
    std::size_t start = out.size();
    out.append(text);
    for (std::size_t i = start; i < out.size(); ++i)
        if (out[i] == '\t' || out[i] == '\n' || out[i] == '\r') out[i] = ' ';
    out.push_back('\n');
    return out;
}

std::string expired_line(std::uint64_t lease, EndReason reason) {
    std::string out = "EXPIRED\t" + std::to_string(lease) + "\t";
    out.append(to_string(reason)).push_back('\n');
    return out;
}

std::optional<Reply> parse_reply(std::string_view line, std::string& error) {
    auto f = split_fields(line);
    Reply r{};
    if (f[0] == "OK" && f.size() >= 2) {
        r.kind = Reply::Kind::ok;
        r.tag = std::string(f[1]);
        for (std::size_t i = 2; i < f.size(); ++i) r.fields.emplace_back(f[i]);
        return r;
    }
    if (f[0] == "FAIL" && f.size() == 4) {
        auto code = parse_fail_code(f[2]);
        if (!code) {
            error = "unknown FAIL code '" + shown(f[2]) + "'";
            return std::nullopt;
        }
        r.kind = Reply::Kind::fail;
        r.tag = std::string(f[1]);
        r.code = *code;
        r.text = std::string(f[3]);
        return r;
    }
    if (f[0] == "EXPIRED" && f.size() == 3) {
        auto reason = parse_end_reason(f[2]);
        if (!parse_u64(f[1], r.lease) || !reason || !is_expiry(*reason)) {
            error = "bad EXPIRED line: '" + shown(line) + "'";
            return std::nullopt;
        }
        r.kind = Reply::Kind::expired;
        r.reason = *reason;
        return r;
    }
    if (auto v = parse_version_line(line)) {
        r.kind = Reply::Kind::version;
        r.version = *v;
        return r;
    }
    error = "not a reply: '" + shown(line) + "'";
    return std::nullopt;
}

} // namespace foreman::protocol
