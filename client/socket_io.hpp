#pragma once
// The client's socket system calls in one place: connecting to the control
// socket, and recvmsg with SCM_RIGHTS (the worker connections of LEASE OK
// lines ride on the bytes of those lines; PROTOCOL.md "Control protocol").

#include "spawn/unique_fd.hpp"

#include <cstddef>
#include <string>
#include <string_view>
#include <sys/types.h>
#include <vector>

namespace foreman::client {

/// A new AF_UNIX stream socket, close-on-exec (Asio never sets FD_CLOEXEC
/// itself) and optionally non-blocking. Throws Error (io).
spawn::unique_fd open_unix_stream(bool non_blocking);

/// A blocking, close-on-exec socket connected to `path`. Throws Error (io)
/// naming the path.
spawn::unique_fd connect_unix(const std::string& path);

/// protocol::recv_with_fds with owned descriptors: the number of bytes read (0 = the
/// peer hung up), or -1 with errno set (EAGAIN on a non-blocking socket,
/// EINTR, ...). Every descriptor that arrived is appended to `fds`, in order.
/// When the kernel truncated the control data (MSG_CTRUNC), the descriptors
/// that did arrive are closed and Error (protocol) is thrown: pairing
/// descriptors with lines is lost for good.
ssize_t recv_with_fds(int fd, char* buf, std::size_t len, std::vector<spawn::unique_fd>& fds);

/// Writes all of `bytes` to a blocking socket (MSG_NOSIGNAL, EINTR retried).
/// Throws Error (io).
void send_all(int fd, std::string_view bytes);

} // namespace foreman::client
