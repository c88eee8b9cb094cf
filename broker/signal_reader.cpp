#include "broker/signal_reader.hpp"

#include "broker/log.hpp"

#include <cerrno>
#include <csignal>
#include <cstring>
#include <stdexcept>
#include <sys/signalfd.h>
#include <unistd.h>

namespace foreman::broker {

namespace {

int open_signalfd(std::initializer_list<int> signals) {
    sigset_t set;
    ::sigemptyset(&set);
    for (int sig : signals) ::sigaddset(&set, sig);
    if (int e = ::pthread_sigmask(SIG_BLOCK, &set, nullptr); e != 0)
        throw std::runtime_error(std::string("cannot block the signals foreman handles: ") + std::strerror(e));
    int fd = ::signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (fd < 0) throw std::runtime_error(std::string("signalfd: ") + std::strerror(errno));
    return fd;
}

} // namespace

SignalReader::SignalReader(boost::asio::io_context& io, std::initializer_list<int> signals, Handler on_signal)
    : fd_(io, open_signalfd(signals)), on_signal_(std::move(on_signal)) {
    wait();
}

void SignalReader::close() {
    boost::system::error_code ignored;
    fd_.close(ignored);
}

void SignalReader::wait() {
    fd_.async_wait(boost::asio::posix::stream_descriptor::wait_read, [this](const boost::system::error_code& ec) {
        if (ec) return; // closed
        read();
        wait();
    });
}

void SignalReader::read() {
    for (;;) {
        signalfd_siginfo info;
        ssize_t n = ::read(fd_.native_handle(), &info, sizeof info);
        if (n == static_cast<ssize_t>(sizeof info)) {
            on_signal_(static_cast<int>(info.ssi_signo));
            if (!fd_.is_open()) return; // the handler closed it
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno != EAGAIN) log_warning(std::string("reading signals: ") + std::strerror(errno));
        return;
    }
}

} // namespace foreman::broker
