#include "protocol/end_reason.hpp"

#include <array>
#include <utility>

namespace foreman::protocol {
namespace {
constexpr std::array<std::pair<EndReason, std::string_view>, 7> names{{
    {EndReason::ttl, "ttl"},
    {EndReason::worker_ready, "worker-ready"},
    {EndReason::worker_exit, "worker-exit"},
    {EndReason::processtime, "processtime"},
    {EndReason::shutdown, "shutdown"},
    {EndReason::released, "released"},
    {EndReason::holder_closed, "holder-closed"},
}};
} // namespace

std::string_view to_string(EndReason reason) {
    for (auto& [r, name] : names)
        if (r == reason) return name;
    return "ttl";
}

std::optional<EndReason> parse_end_reason(std::string_view text) {
    for (auto& [r, name] : names)
        if (name == text) return r;
    return std::nullopt;
}

} // namespace foreman::protocol
