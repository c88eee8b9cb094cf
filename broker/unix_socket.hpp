#pragma once
// The few unix-socket system calls the broker makes itself, each creating
// its descriptor close-on-exec (Asio never sets FD_CLOEXEC: NOTES.md).

#include "spawn/unique_fd.hpp"

#include <string>
#include <system_error>

namespace foreman::broker {

/// A listening SOCK_STREAM socket bound at `path` (a stale file there is
/// removed first). Throws std::system_error naming the path.
spawn::unique_fd listen_unix(const std::string& path, int backlog);

/// As listen_unix, but the socket file at `path` has file mode `mode` from
/// the moment it exists there, never anything wider (see the .cpp for how).
/// A stale file at `path` is replaced atomically.
spawn::unique_fd listen_unix_with_mode(const std::string& path, int backlog, unsigned mode);

/// A SOCK_STREAM connection to `path` (a blocking socket). It never waits:
/// a unix connect() to a listener whose backlog is full would block until
/// the listener accepts, which a hung worker never does; here it fails at
/// once with EAGAIN. Returns an empty fd and sets `error` on failure.
spawn::unique_fd connect_unix(const std::string& path, std::error_code& error);

/// mkdir -p with `mode` for the directories it creates. Throws std::system_error.
void make_directories(const std::string& path, unsigned mode);

} // namespace foreman::broker
