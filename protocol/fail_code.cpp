#include "protocol/fail_code.hpp"

#include <array>
#include <utility>

namespace foreman::protocol {
namespace {
constexpr std::array<std::pair<FailCode, std::string_view>, 10> names{{
    {FailCode::bad_request, "bad-request"},
    {FailCode::version, "version"},
    {FailCode::unknown_protocol, "unknown-protocol"},
    {FailCode::busy, "busy"},
    {FailCode::overloaded, "overloaded"},
    {FailCode::spawn_failed, "spawn-failed"},
    {FailCode::no_such_lease, "no-such-lease"},
    {FailCode::denied, "denied"},
    {FailCode::exists, "exists"},
    {FailCode::shutting_down, "shutting-down"},
}};
} // namespace

std::string_view to_string(FailCode code) {
    for (auto& [c, name] : names)
        if (c == code) return name;
    return "bad-request";
}

std::optional<FailCode> parse_fail_code(std::string_view text) {
    for (auto& [c, name] : names)
        if (name == text) return c;
    return std::nullopt;
}

} // namespace foreman::protocol
