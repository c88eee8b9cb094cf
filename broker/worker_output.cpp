#include "broker/worker_output.hpp"

#include "broker/log.hpp"

#include <boost/asio/post.hpp>

namespace foreman::broker {

WorkerOutput::WorkerOutput(boost::asio::io_context& io, std::string protocol, int pid)
    : strand_(boost::asio::make_strand(io)), pipe_(strand_), protocol_(std::move(protocol)), pid_(pid) {}

std::shared_ptr<WorkerOutput> WorkerOutput::start(boost::asio::io_context& io, spawn::unique_fd read_end,
                                                  std::string protocol, int pid) {
    std::shared_ptr<WorkerOutput> self(new WorkerOutput(io, std::move(protocol), pid));
    // assign() and non_blocking() throw; until assign succeeds read_end owns
    // the descriptor.
    self->pipe_.assign(read_end.get());
    read_end.release();
    self->pipe_.non_blocking(true);
    // Nobody else knows the object yet, but the first read is posted so that
    // every handler of it runs on the strand.
    boost::asio::post(self->strand_, [self] { self->read(); });
    return self;
}

void WorkerOutput::close() {
    boost::asio::post(strand_, [self = shared_from_this()] {
        if (self->stopped_) return;
        self->stopped_ = true;
        // Closing ends the pending read with operation_aborted; a read that
        // had already completed sees stopped_ and logs what it got.
        self->finish();
    });
}

void WorkerOutput::read() {
    pipe_.async_read_some(boost::asio::buffer(buffer_),
                          [self = shared_from_this()](const boost::system::error_code& ec, std::size_t n) {
                              self->pending_.append(self->buffer_.data(), n);
                              if (self->stopped_) {
                                  self->emit_lines(true);
                                  return;
                              }
                              if (!ec) {
                                  self->emit_lines(false);
                                  self->read();
                                  return;
                              }
                              if (ec != boost::asio::error::eof && ec != boost::asio::error::operation_aborted)
                                  log_warning("output of " + self->protocol_ + "[" + std::to_string(self->pid_) +
                                              "]: read failed: " + ec.message());
                              self->stopped_ = true;
                              self->finish();
                          });
}

void WorkerOutput::emit_lines(bool flush) {
    std::size_t start = 0;
    for (;;) {
        std::string_view rest = std::string_view(pending_).substr(start);
        auto nl = rest.find('\n');
        if (nl != std::string_view::npos && nl <= max_line) {
            emit(rest.substr(0, nl));
            start += nl + 1;
        } else if (rest.size() > max_line) {
            // A piece is cut only once more than max_line bytes without a
            // newline are known, so a line of exactly max_line bytes stays
            // whole however the reads split it.
            emit(rest.substr(0, max_line));
            start += max_line;
        } else {
            if (flush && !rest.empty()) {
                emit(rest);
                start = pending_.size();
            }
            break;
        }
    }
    pending_.erase(0, start);
}

void WorkerOutput::emit(std::string_view line) {
    std::string text;
    text.reserve(protocol_.size() + line.size() + 16);
    text.append(protocol_).append("[").append(std::to_string(pid_)).append("]: ").append(line);
    log_raw(text);
}

void WorkerOutput::finish() {
    emit_lines(true);
    boost::system::error_code ignored;
    pipe_.close(ignored);
}

} // namespace foreman::broker
