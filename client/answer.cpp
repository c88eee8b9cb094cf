#include "client/answer.hpp"

#include <boost/json/parse.hpp>

namespace foreman::client {

namespace {

[[noreturn]] void malformed(const Answer& a, const std::string& why) {
    throw Error(Error::Kind::protocol, a.label + ": malformed reply from the broker: " + why);
}

void expect_fields(const Answer& a, std::size_t n) {
    check_ok(a);
    if (a.reply.fields.size() != n)
        malformed(a, "expected " + std::to_string(n) + " fields after the tag, got " +
                         std::to_string(a.reply.fields.size()));
}

std::uint64_t number(const Answer& a, std::size_t i, const char* what) {
    std::uint64_t n = 0;
    if (!protocol::parse_u64(a.reply.fields[i], n)) malformed(a, std::string(what) + " is not a number");
    return n;
}

} // namespace

void check_ok(const Answer& a) {
    if (a.reply.kind == protocol::Reply::Kind::fail) throw Error(a.label, a.reply.code, a.reply.text);
    if (a.reply.kind != protocol::Reply::Kind::ok) malformed(a, "neither OK nor FAIL");
}

LeaseGrant decode_lease(Answer&& a) {
    expect_fields(a, 3);
    LeaseGrant g;
    g.lease_id = number(a, 0, "lease id");
    g.worker_pid = static_cast<pid_t>(number(a, 1, "worker pid"));
    g.ttl = std::chrono::milliseconds(number(a, 2, "ttl"));
    if (!a.fd) malformed(a, "LEASE OK came without a descriptor");
    g.fd = std::move(a.fd);
    return g;
}

std::chrono::milliseconds decode_renew(const Answer& a) {
    expect_fields(a, 1);
    return std::chrono::milliseconds(number(a, 0, "ttl"));
}

boost::json::value decode_status(const Answer& a) {
    expect_fields(a, 1);
    boost::system::error_code ec;
    auto v = boost::json::parse(a.reply.fields[0], ec);
    if (ec) malformed(a, "STATUS json: " + ec.message());
    return v;
}

void decode_empty(const Answer& a) { expect_fields(a, 0); }

} // namespace foreman::client
