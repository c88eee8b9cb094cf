#pragma once
// A worker's stdout+stderr: the read end of its pipe, read asynchronously and
// logged line by line as "<protocol>[<pid>]: <line>".

#include "spawn/unique_fd.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/strand.hpp>

#include <array>
#include <memory>
#include <string>
#include <string_view>

namespace foreman::broker {

class WorkerOutput : public std::enable_shared_from_this<WorkerOutput> {
public:
    /// Lines longer than this are logged in pieces of this size.
    static constexpr std::size_t max_line = 4096;

    /// Starts reading `read_end` (made non-blocking). The reader keeps itself
    /// alive until end of file, an error or close(), then closes the pipe;
    /// the returned pointer is only needed to call close().
    static std::shared_ptr<WorkerOutput> start(boost::asio::io_context& io, spawn::unique_fd read_end,
                                               std::string protocol, int pid);

    /// Stops reading and closes the pipe; a pending unterminated line is
    /// still logged. Thread-safe (runs on the reader's strand), idempotent.
    void close();

private:
    WorkerOutput(boost::asio::io_context& io, std::string protocol, int pid);
    void read();
    /// Logs every complete line of pending_ (and, with `flush`, the rest).
    void emit_lines(bool flush);
    void emit(std::string_view line);
    void finish();

    boost::asio::strand<boost::asio::io_context::executor_type> strand_;
    boost::asio::posix::stream_descriptor pipe_; ///< handlers run on strand_
    std::string protocol_;
    int pid_;
    bool stopped_ = false; ///< end of file, an error or close() was seen
    std::string pending_; ///< bytes read but not yet logged (no '\n' in it)
    std::array<char, max_line> buffer_;
};

} // namespace foreman::broker
