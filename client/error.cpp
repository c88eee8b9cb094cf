#include "client/error.hpp"

namespace foreman::client {

Error::Error(const std::string& label, protocol::FailCode code, const std::string& text)
    : std::runtime_error(label + ": " + std::string(protocol::to_string(code)) + (text.empty() ? "" : ": " + text)),
      kind_(Kind::refused), code_(code) {}

Error::Error(Kind kind, const std::string& what) : std::runtime_error(what), kind_(kind) {}

} // namespace foreman::client
