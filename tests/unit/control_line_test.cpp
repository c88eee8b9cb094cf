#include "protocol/control_line.hpp"

#include <catch2/catch.hpp>

#include <cstring>

using namespace foreman::protocol;

namespace {
Request request(std::string_view line) {
    auto r = parse_request(line);
    INFO(line);
    REQUIRE(std::holds_alternative<Request>(r));
    return std::get<Request>(r);
}
RequestError error(std::string_view line) {
    auto r = parse_request(line);
    INFO(line);
    REQUIRE(std::holds_alternative<RequestError>(r));
    return std::get<RequestError>(r);
}
} // namespace

TEST_CASE("lines are split at newlines however the bytes arrive", "[control-line]") {
    LineReader r;
    std::string_view line;
    r.feed("VERSION\tfore");
    CHECK(r.next(line) == LineReader::Result::need_more);
    r.feed("man\t1000\nSTATUS\tt1\nRE");
    REQUIRE(r.next(line) == LineReader::Result::line);
    CHECK(line == "VERSION\tforeman\t1000");
    REQUIRE(r.next(line) == LineReader::Result::line);
    CHECK(line == "STATUS\tt1");
    CHECK(r.next(line) == LineReader::Result::need_more);
    char* p = r.prepare(64);
    std::memcpy(p, "NEW\tt2\t7\n", 9);
    r.commit(9);
    REQUIRE(r.next(line) == LineReader::Result::line);
    CHECK(line == "RENEW\tt2\t7");
    CHECK(r.buffered() == 0);
}

TEST_CASE("a line of 65536 bytes is read and one byte more is too long", "[control-line]") {
    LineReader ok;
    ok.feed(std::string(max_line_length, 'x') + "\n");
    std::string_view line;
    REQUIRE(ok.next(line) == LineReader::Result::line);
    CHECK(line.size() == max_line_length);

    LineReader tl;
    tl.feed(std::string(max_line_length + 1, 'x'));
    CHECK(tl.next(line) == LineReader::Result::too_long);
    LineReader tl2;
    tl2.feed(std::string(max_line_length + 1, 'x') + "\n");
    CHECK(tl2.next(line) == LineReader::Result::too_long);
}

TEST_CASE("the VERSION handshake line is read and written", "[control-line]") {
    CHECK(version_line() == "VERSION\tforeman\t1000\n");
    CHECK(parse_version_line("VERSION\tforeman\t1000") == 1000u);
    CHECK(parse_version_line("VERSION\tforeman\t999") == 999u);
    CHECK_FALSE(parse_version_line("VERSION\tother\t1000"));
    CHECK_FALSE(parse_version_line("VERSION\tforeman"));
    CHECK_FALSE(parse_version_line("LEASE\tt\techo"));
}

TEST_CASE("LEASE reads every key of PROTOCOL.md", "[control-line]") {
    auto r = request("LEASE\tt-1\techo\tuser=alice\tttl_ms=500\twait_ms=0\tversion=1000\tdetach=1");
    CHECK(r.verb == Verb::lease);
    CHECK(r.tag == "t-1");
    CHECK(r.lease.protocol == "echo");
    CHECK(r.lease.user == "alice");
    CHECK(r.lease.ttl_ms == 500u);
    CHECK(r.lease.wait_ms == 0u);
    CHECK(r.lease.version == 1000u);
    CHECK(r.lease.detach);
    auto plain = request("LEASE\tx\techo");
    CHECK_FALSE(plain.lease.ttl_ms);
    CHECK_FALSE(plain.lease.detach);
}

TEST_CASE("a malformed LEASE is bad-request naming what is wrong", "[control-line]") {
    CHECK(error("LEASE\tt\techo\tcolour=red").text == "unknown key 'colour'");
    CHECK(error("LEASE\tt\techo\tttl_ms=-5").text.find("ttl_ms is not a non-negative integer") == 0);
    CHECK(error("LEASE\tt\techo\tttl_ms=1\tttl_ms=2").text == "key 'ttl_ms' given twice");
    CHECK(error("LEASE\tt\techo\tdetach=yes").text == "detach must be 0 or 1");
    CHECK(error("LEASE\tt\techo\tuser").text.find("not key=value") == 0);
    CHECK(error("LEASE\tt").text == "LEASE needs a protocol");
    auto e = error("LEASE\tt\techo\twait_ms=99999999999999999999999");
    CHECK(e.code == FailCode::bad_request);
    CHECK(e.tag == "t");
}

TEST_CASE("a bad or missing tag is answered with tag *", "[control-line]") {
    CHECK(error("LEASE\tbad tag\techo").tag == "*");
    CHECK(error("LEASE\t\techo").tag == "*");
    CHECK(error(std::string("LEASE\t") + std::string(65, 'a') + "\techo").tag == "*");
    CHECK(error("STATUS").tag == "*");
    CHECK(error("").tag == "*");
    CHECK(is_valid_tag(std::string(64, 'a')));
    CHECK(is_valid_tag("A-z_0.9"));
    CHECK_FALSE(is_valid_tag("a/b"));
}

TEST_CASE("RENEW, RELEASE, STATUS, REGISTER and UNREGISTER are read", "[control-line]") {
    auto renew = request("RENEW\tr\t42");
    CHECK(renew.verb == Verb::renew);
    CHECK(renew.lease_id == 42u);
    CHECK(request("RELEASE\tr\t18446744073709551615").lease_id == 18446744073709551615ull);
    CHECK(error("RELEASE\tr\tabc").text == "RELEASE takes one lease id");
    CHECK(error("RENEW\tr").code == FailCode::bad_request);
    CHECK(request("STATUS\ts").verb == Verb::status);
    CHECK(error("STATUS\ts\textra").text == "STATUS takes no argument");
    auto reg = request("REGISTER\tg\tnew\tpath=/bin/cat\tmax_instances=2");
    CHECK(reg.verb == Verb::register_pool);
    CHECK(reg.protocol == "new");
    REQUIRE(reg.keys.size() == 2);
    CHECK(reg.keys[1] == std::pair<std::string, std::string>{"max_instances", "2"});
    CHECK(request("UNREGISTER\tu\tnew").protocol == "new");
    CHECK(error("UNREGISTER\tu").code == FailCode::bad_request);
}

TEST_CASE("an unknown command is bad-request with its tag", "[control-line]") {
    auto e = error("FROB\tt1\tx");
    CHECK(e.tag == "t1");
    CHECK(e.code == FailCode::bad_request);
    CHECK(e.text == "unknown command 'FROB'");
}

TEST_CASE("replies are written as PROTOCOL.md spells them", "[control-line]") {
    CHECK(ok_line("t") == "OK\tt\n");
    CHECK(ok_line("t", {"7", "1234", "30000"}) == "OK\tt\t7\t1234\t30000\n");
    CHECK(fail_line("*", FailCode::bad_request, "line too long") == "FAIL\t*\tbad-request\tline too long\n");
    CHECK(fail_line("t", FailCode::busy, "a\tb\nc") == "FAIL\tt\tbusy\ta b c\n");
    CHECK(expired_line(9, EndReason::worker_ready) == "EXPIRED\t9\tworker-ready\n");
}

TEST_CASE("replies are read back", "[control-line]") {
    std::string err;
    auto ok = parse_reply("OK\tt\t7\t1234\t30000", err);
    REQUIRE(ok);
    CHECK(ok->kind == Reply::Kind::ok);
    CHECK(ok->fields == std::vector<std::string>{"7", "1234", "30000"});
    auto fail = parse_reply("FAIL\tt\tno-such-lease\tnot yours", err);
    REQUIRE(fail);
    CHECK(fail->code == FailCode::no_such_lease);
    CHECK(fail->text == "not yours");
    auto exp = parse_reply("EXPIRED\t9\tttl", err);
    REQUIRE(exp);
    CHECK(exp->lease == 9u);
    CHECK(exp->reason == EndReason::ttl);
    CHECK(parse_reply("VERSION\tforeman\t1000", err)->kind == Reply::Kind::version);
    CHECK_FALSE(parse_reply("EXPIRED\t9\treleased", err));
    CHECK_FALSE(parse_reply("FAIL\tt\tnope\tx", err));
    CHECK_FALSE(parse_reply("HELLO", err));
}
