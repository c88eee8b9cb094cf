#pragma once
// run_as: the user a pool's workers run as, resolved in the broker before the
// fork (getpwnam and initgroups read NSS files and allocate, which is not
// safe in a forked child of a threaded process).

#include "spawn/launch_spec.hpp"

#include <string>

namespace foreman::broker {

/// Credentials of `user` (a name or a decimal uid): its uid, primary gid and
/// supplementary groups. Throws std::runtime_error with a one-line reason:
/// unknown user, or root without `allow_root`.
spawn::Credentials resolve_run_as(const std::string& user, bool allow_root);

} // namespace foreman::broker
