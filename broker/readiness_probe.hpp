#pragma once
// Readiness of a notify=none worker (docs: "a connect() to its socket
// succeeds"): connect to its unix stream socket, retrying with back-off until
// a deadline.

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <string>

namespace foreman::broker {

class ReadinessProbe : public std::enable_shared_from_this<ReadinessProbe> {
public:
    /// Called exactly once, on the probe's strand: true when a connect()
    /// succeeded, false at the deadline, on cancel() or on an error other
    /// than "not there yet" (ENOENT, ECONNREFUSED, EAGAIN).
    using Done = std::function<void(bool ready)>;

    /// Retries every fast_interval during the first fast_period (most
    /// workers listen within a few milliseconds of exec, and a coarser
    /// schedule made spawn-to-ready twice the raw time: bench/RESULTS.md);
    /// then each retry waits twice as long as the last, up to max_backoff.
    static constexpr std::chrono::microseconds fast_interval{200};
    static constexpr std::chrono::milliseconds fast_period{20};
    static constexpr std::chrono::milliseconds max_backoff{100};

    /// Starts probing `path`; the first attempt runs on the io_context, never
    /// inside start(). The probe keeps itself alive until done has been
    /// called; the returned pointer is only needed to call cancel().
    static std::shared_ptr<ReadinessProbe> start(boost::asio::io_context& io, std::string path,
                                                 std::chrono::steady_clock::time_point deadline, Done done);

    /// Ends the probe: done(false), unless done was already called.
    /// Thread-safe (runs on the probe's strand), idempotent.
    void cancel();

private:
    ReadinessProbe(boost::asio::io_context& io, std::string path, std::chrono::steady_clock::time_point deadline,
                   Done done);
    void attempt();
    void finish(bool ready);

    boost::asio::strand<boost::asio::io_context::executor_type> strand_;
    boost::asio::steady_timer timer_; ///< handlers run on strand_
    std::string path_;
    std::chrono::steady_clock::time_point deadline_;
    Done done_; ///< empty once called
    std::chrono::steady_clock::time_point started_;
    std::chrono::microseconds backoff_ = fast_interval;
};

} // namespace foreman::broker
