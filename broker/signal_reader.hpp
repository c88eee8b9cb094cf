#pragma once
// The signals the broker acts on (SIGTERM, SIGINT, SIGHUP), read from a
// signalfd on the io_context instead of caught by a handler.
//
// Not Asio's signal_set, which catches them with a handler that writes to a
// pipe: under ThreadSanitizer (GCC 12) a SIGHUP sent right after READY=1 was
// lost now and then (6 runs of 100 under load; the broker idle, its mask
// open, nothing pending, the pipe empty). With the signals blocked in every
// thread of the broker, the kernel keeps them pending until the signalfd is
// read: no handler runs, no thread is interrupted, none can be missed.
//
// The constructor blocks the signals in the calling thread: it must run
// before the broker starts any thread, which inherits the mask. They stay
// blocked in that thread after the reader is gone (a signal that comes
// during the exit must not kill the process it stops cleanly). Children
// start with an empty mask (spawn/child_setup).

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>

#include <functional>
#include <initializer_list>

namespace foreman::broker {

class SignalReader {
public:
    using Handler = std::function<void(int signal)>;

    /// Blocks `signals` in this thread and calls `on_signal` on `io`, once
    /// per signal received, from the first run of `io` on.
    SignalReader(boost::asio::io_context& io, std::initializer_list<int> signals, Handler on_signal);

    /// No more signals are read (those that come stay pending).
    void close();

private:
    void wait();
    void read();

    boost::asio::posix::stream_descriptor fd_;
    Handler on_signal_;
};

} // namespace foreman::broker
