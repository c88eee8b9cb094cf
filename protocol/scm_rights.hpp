#pragma once
// Descriptor passing over unix stream sockets (SCM_RIGHTS), in one file.
// Asio has no API for it: these are plain sendmsg/recvmsg on a non-blocking
// socket; the caller waits for readiness (NOTES.md).

#include <cstddef>
#include <string_view>
#include <sys/types.h>
#include <vector>

namespace foreman::protocol {

/// Descriptors one recv_with_fds() makes room for: a client pipelining LEASEs
/// can receive several OK lines, each with its descriptor, in one read.
inline constexpr std::size_t max_fds_per_read = 64;

/// Sends `bytes`, with `fd` (if >= 0) attached to the first byte. Returns the
/// bytes sent, or -1 with errno (EAGAIN: wait for writability and retry the
/// rest, without the fd, which went with the first byte).
ssize_t send_with_fd(int socket, std::string_view bytes, int fd);

/// Receives into `buffer`; descriptors that arrive (close-on-exec) are
/// appended to `fds` in order. Returns the bytes read (0 at end of file), or
/// -1 with errno. A message whose descriptors did not all fit (MSG_CTRUNC)
/// has the ones that did closed, and fails with EMSGSIZE.
ssize_t recv_with_fds(int socket, char* buffer, std::size_t size, std::vector<int>& fds);

} // namespace foreman::protocol
