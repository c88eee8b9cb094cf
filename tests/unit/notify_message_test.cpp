#include "protocol/notify_message.hpp"

#include <catch2/catch.hpp>

using foreman::protocol::parse_notify;

TEST_CASE("a datagram may carry several keys", "[notify]") {
    std::string err;
    auto m = parse_notify("READY=1\nSTATUS=serving 3 clients\nWATCHDOG=1\n", err);
    REQUIRE(m);
    CHECK(m->ready);
    CHECK(m->watchdog);
    CHECK_FALSE(m->stopping);
    CHECK(m->status == "serving 3 clients");
}

TEST_CASE("READY=1 without a trailing newline is read", "[notify]") {
    std::string err;
    auto m = parse_notify("READY=1", err);
    REQUIRE(m);
    CHECK(m->ready);
}

TEST_CASE("STOPPING=1 is read and keys foreman does not use are ignored", "[notify]") {
    std::string err;
    auto m = parse_notify("MAINPID=42\nSTOPPING=1\nBARRIER=1", err);
    REQUIRE(m);
    CHECK(m->stopping);
    CHECK_FALSE(m->ready);
}

TEST_CASE("READY=0 is not readiness", "[notify]") {
    std::string err;
    auto m = parse_notify("READY=0", err);
    REQUIRE(m);
    CHECK_FALSE(m->ready);
}

TEST_CASE("malformed datagrams are rejected with a reason", "[notify]") {
    std::string err;
    CHECK_FALSE(parse_notify("", err));
    CHECK(err == "empty datagram");
    CHECK_FALSE(parse_notify("READY", err));
    CHECK(err.find("not KEY=VALUE") == 0);
    CHECK_FALSE(parse_notify("=1", err));
    CHECK_FALSE(parse_notify(std::string_view("READY=1\0x", 9), err));
    CHECK(err == "NUL byte in datagram");
}

TEST_CASE("the reason quotes the malformed line without its control characters or invalid UTF-8", "[notify]") {
    std::string err;
    CHECK_FALSE(parse_notify("\x1b[2J\rfake log line\xff\nREADY=1", err));
    CHECK(err == "not KEY=VALUE: '?[2J?fake log line?'");
}
