#include "client/request_line.hpp"

#include <stdexcept>

namespace foreman::client {

namespace {

void append_field(std::string& line, std::string_view field, std::string_view what) {
    if (field.find_first_of("\t\n") != std::string_view::npos)
        throw std::invalid_argument(std::string(what) + " holds a tab or a newline");
    line.push_back('\t');
    line.append(field);
}

void append_key(std::string& line, std::string_view key, std::string_view value) {
    if (key.empty() || key.find('=') != std::string_view::npos)
        throw std::invalid_argument("bad key '" + std::string(key) + "': empty or holding '='");
    std::string kv(key);
    kv.push_back('=');
    kv.append(value);
    append_field(line, kv, "key " + std::string(key));
}

std::string_view verb_name(protocol::Verb verb) {
    switch (verb) {
    case protocol::Verb::lease: return "LEASE";
    case protocol::Verb::renew: return "RENEW";
    case protocol::Verb::release: return "RELEASE";
    case protocol::Verb::status: return "STATUS";
    case protocol::Verb::register_pool: return "REGISTER";
    case protocol::Verb::unregister_pool: return "UNREGISTER";
    }
    return "?";
}

} // namespace

std::string format_request(const protocol::Request& r) {
    if (!protocol::is_valid_tag(r.tag))
        throw std::invalid_argument("bad tag '" + r.tag + "': 1 to 64 of [A-Za-z0-9_.-]");
    std::string line(verb_name(r.verb));
    line.push_back('\t');
    line.append(r.tag);
    switch (r.verb) {
    case protocol::Verb::lease:
        if (r.lease.protocol.empty()) throw std::invalid_argument("LEASE needs a protocol");
        append_field(line, r.lease.protocol, "protocol");
        if (!r.lease.user.empty()) append_key(line, "user", r.lease.user);
        if (r.lease.ttl_ms) append_key(line, "ttl_ms", std::to_string(*r.lease.ttl_ms));
        if (r.lease.wait_ms) append_key(line, "wait_ms", std::to_string(*r.lease.wait_ms));
        if (r.lease.version) append_key(line, "version", std::to_string(*r.lease.version));
        if (r.lease.detach) append_key(line, "detach", "1");
        break;
    case protocol::Verb::renew:
    case protocol::Verb::release:
        line.append("\t").append(std::to_string(r.lease_id));
        break;
    case protocol::Verb::status:
        break;
    case protocol::Verb::register_pool:
    case protocol::Verb::unregister_pool:
        if (r.protocol.empty()) throw std::invalid_argument(std::string(verb_name(r.verb)) + " needs a protocol");
        append_field(line, r.protocol, "protocol");
        if (r.verb == protocol::Verb::register_pool)
            for (const auto& [key, value] : r.keys) append_key(line, key, value);
        break;
    }
    if (line.size() > protocol::max_line_length)
        throw std::invalid_argument("request line longer than " + std::to_string(protocol::max_line_length) +
                                    " bytes");
    line.push_back('\n');
    return line;
}

std::string request_label(const protocol::Request& r) {
    std::string label(verb_name(r.verb));
    switch (r.verb) {
    case protocol::Verb::lease: return label + " " + r.lease.protocol;
    case protocol::Verb::renew:
    case protocol::Verb::release: return label + " " + std::to_string(r.lease_id);
    case protocol::Verb::status: return label;
    case protocol::Verb::register_pool:
    case protocol::Verb::unregister_pool: return label + " " + r.protocol;
    }
    return label;
}

} // namespace foreman::client
