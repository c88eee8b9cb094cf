#pragma once
// What a client call fails with: the broker's FAIL reply, or a broken
// connection, or a line the client cannot make sense of.

#include "protocol/fail_code.hpp"

#include <stdexcept>
#include <string>

namespace foreman::client {

class Error : public std::runtime_error {
public:
    enum class Kind {
        refused,  ///< the broker answered FAIL; code() says why
        io,       ///< connecting, sending or receiving failed, or the broker hung up
        protocol, ///< the broker sent something that breaks the contract
    };

    /// A FAIL reply: what() is "<label>: <code>: <text>".
    Error(const std::string& label, protocol::FailCode code, const std::string& text);
    Error(Kind kind, const std::string& what);

    Kind kind() const noexcept { return kind_; }
    /// The FAIL code; meaningful only when kind() == Kind::refused.
    protocol::FailCode code() const noexcept { return code_; }
    /// Whether this is a FAIL with `code`.
    bool is(protocol::FailCode code) const noexcept { return kind_ == Kind::refused && code_ == code; }

private:
    Kind kind_;
    protocol::FailCode code_ = protocol::FailCode::bad_request;
};

} // namespace foreman::client
