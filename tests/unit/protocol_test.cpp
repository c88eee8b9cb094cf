#include "protocol/default_paths.hpp"
#include "protocol/end_reason.hpp"
#include "protocol/fail_code.hpp"

#include <catch2/catch.hpp>

using namespace foreman::protocol;

TEST_CASE("every FAIL code has its PROTOCOL.md spelling and parses back", "[protocol]") {
    const std::pair<FailCode, const char*> codes[] = {
        {FailCode::bad_request, "bad-request"},   {FailCode::version, "version"},
        {FailCode::unknown_protocol, "unknown-protocol"}, {FailCode::busy, "busy"},
        {FailCode::overloaded, "overloaded"},     {FailCode::spawn_failed, "spawn-failed"},
        {FailCode::no_such_lease, "no-such-lease"}, {FailCode::denied, "denied"},
        {FailCode::exists, "exists"},             {FailCode::shutting_down, "shutting-down"},
    };
    for (auto& [code, name] : codes) {
        CHECK(to_string(code) == name);
        CHECK(parse_fail_code(name) == code);
    }
    CHECK_FALSE(parse_fail_code("Busy").has_value());
}

TEST_CASE("expiry reasons have their PROTOCOL.md spelling, release and close are not expiries",
          "[protocol]") {
    CHECK(to_string(EndReason::ttl) == "ttl");
    CHECK(to_string(EndReason::worker_ready) == "worker-ready");
    CHECK(to_string(EndReason::worker_exit) == "worker-exit");
    CHECK(to_string(EndReason::processtime) == "processtime");
    CHECK(to_string(EndReason::shutdown) == "shutdown");
    CHECK(parse_end_reason("worker-exit") == EndReason::worker_exit);
    CHECK(is_expiry(EndReason::ttl));
    CHECK(is_expiry(EndReason::shutdown));
    CHECK_FALSE(is_expiry(EndReason::released));
    CHECK_FALSE(is_expiry(EndReason::holder_closed));
}

TEST_CASE("the runtime dir is XDG_RUNTIME_DIR/foreman, else /run/foreman for root, else /tmp/foreman-uid",
          "[protocol]") {
    CHECK(default_runtime_dir(std::string("/run/user/1000"), 1000) == "/run/user/1000/foreman");
    CHECK(default_runtime_dir(std::nullopt, 0) == "/run/foreman");
    CHECK(default_runtime_dir(std::string(""), 0) == "/run/foreman");
    CHECK(default_runtime_dir(std::nullopt, 1000) == "/tmp/foreman-1000");
    CHECK(default_control_socket("/run/foreman") == "/run/foreman/foreman.sock");
}
