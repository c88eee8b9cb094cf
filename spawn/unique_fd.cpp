#include "spawn/unique_fd.hpp"

#include <unistd.h>

namespace foreman::spawn {

void unique_fd::reset(int fd) noexcept {
    // close() is not retried on EINTR: on Linux the descriptor is gone anyway.
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
}

} // namespace foreman::spawn
