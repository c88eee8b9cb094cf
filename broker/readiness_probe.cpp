#include "broker/readiness_probe.hpp"

#include "broker/log.hpp"
#include "spawn/unique_fd.hpp"

#include <boost/asio/post.hpp>

#include <cerrno>
#include <cstring>
#include <sys/socket.h>
#include <sys/un.h>

namespace foreman::broker {
namespace {

enum class Connect { ok, not_yet, failed };

/// One non-blocking connect(); the connection, if any, is closed at once.
Connect try_connect(const std::string& path, int& err) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof addr.sun_path) {
        err = ENAMETOOLONG;
        return Connect::failed;
    }
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    spawn::unique_fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd) {
        err = errno;
        return Connect::failed;
    }
    int rc;
    do rc = ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
    while (rc != 0 && errno == EINTR);
    if (rc == 0) return Connect::ok;
    err = errno;
    switch (err) {
    case ENOENT:       // not bound yet
    case ECONNREFUSED: // bound, not listening yet
    case EAGAIN:       // listening, backlog full (unix sockets never say EINPROGRESS)
        return Connect::not_yet;
    default:
        return Connect::failed;
    }
}

} // namespace

ReadinessProbe::ReadinessProbe(boost::asio::io_context& io, std::string path,
                               std::chrono::steady_clock::time_point deadline, Done done)
    : strand_(boost::asio::make_strand(io)), timer_(strand_), path_(std::move(path)), deadline_(deadline),
      done_(std::move(done)), started_(std::chrono::steady_clock::now()) {}

std::shared_ptr<ReadinessProbe> ReadinessProbe::start(boost::asio::io_context& io, std::string path,
                                                      std::chrono::steady_clock::time_point deadline, Done done) {
    std::shared_ptr<ReadinessProbe> self(new ReadinessProbe(io, std::move(path), deadline, std::move(done)));
    boost::asio::post(self->strand_, [self] { self->attempt(); });
    return self;
}

void ReadinessProbe::cancel() {
    boost::asio::post(strand_, [self = shared_from_this()] { self->finish(false); });
}

void ReadinessProbe::attempt() {
    if (!done_) return; // cancelled before this attempt ran
    int err = 0;
    switch (try_connect(path_, err)) {
    case Connect::ok: finish(true); return;
    case Connect::failed:
        log_warning("readiness probe of " + path_ + ": connect: " + std::strerror(err));
        finish(false);
        return;
    case Connect::not_yet: break;
    }
    auto now = std::chrono::steady_clock::now();
    if (now >= deadline_) {
        finish(false);
        return;
    }
    // The last retry is at the deadline itself, so a worker that becomes
    // ready just in time is still seen.
    timer_.expires_at(std::min(now + backoff_, deadline_));
    if (now - started_ >= fast_period)
        backoff_ = std::min<std::chrono::microseconds>(backoff_ * 2, max_backoff);
    timer_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
        if (!ec) self->attempt();
        // operation_aborted: cancel() has already called done.
    });
}

void ReadinessProbe::finish(bool ready) {
    if (!done_) return;
    auto done = std::move(done_);
    done_ = nullptr;
    timer_.cancel();
    done(ready);
}

} // namespace foreman::broker
