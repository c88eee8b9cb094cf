#pragma once
// Writing requests (the codec in protocol/control_line.hpp only reads them).

#include "protocol/control_line.hpp"

#include <string>

namespace foreman::client {

/// The wire line of `request`, ending in '\n'. Throws std::invalid_argument
/// when the request cannot be sent as is: a bad tag, an empty protocol, a
/// field holding a tab or a newline, a REGISTER key that is empty or holds
/// '=', or a line longer than protocol::max_line_length.
std::string format_request(const protocol::Request& request);

/// How errors name a request: "LEASE echo", "RENEW 42", "STATUS".
std::string request_label(const protocol::Request& request);

} // namespace foreman::client
