#pragma once
// Turns what the broker sends (bytes, and descriptors that rode on them) into
// finished requests and EXPIRED events. No I/O: the blocking Connection and
// the Asio AsyncConnection both move bytes into it, so both pair replies and
// descriptors the same way, and tests can drive it with plain strings.
//
// Pairing: descriptors go into a FIFO as recvmsg hands them over; each OK
// line that answers a LEASE takes the oldest one. The broker sends each LEASE
// OK line and its descriptor in one sendmsg, and Linux never reads past a
// message that carries descriptors, so the descriptor is in the FIFO by the
// time its line is complete.

#include "client/answer.hpp"
#include "client/error.hpp"
#include "protocol/control_line.hpp"
#include "protocol/end_reason.hpp"
#include "spawn/unique_fd.hpp"

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace foreman::client {

/// `EXPIRED <lease_id> <reason>`: a lease ended other than by our RELEASE.
struct Expired {
    std::uint64_t lease_id = 0;
    protocol::EndReason reason = protocol::EndReason::ttl;
};

class ReplyDemux {
public:
    /// Remembers a request about to be sent: its reply will be accepted, and
    /// for a LEASE OK a descriptor taken.
    void sent(const protocol::Request& request);
    /// Drops a request that could not be sent after all.
    void unsent(const std::string& tag);
    bool in_flight(const std::string& tag) const { return in_flight_.count(tag) != 0; }
    std::size_t in_flight_count() const { return in_flight_.size(); }

    /// Room for `n` bytes; then received() with how many were written.
    char* prepare(std::size_t n) { return reader_.prepare(n); }
    /// Takes `n` bytes written at prepare() and the descriptors that arrived
    /// with them, and decodes every complete line.
    void received(std::size_t n, std::vector<spawn::unique_fd>& fds);
    /// Bytes fed as a string (tests).
    void received(std::string_view bytes);
    /// The connection is gone (EOF or an error): fatal() becomes `why`
    /// unless something was fatal already.
    void failed(Error why);

    /// The broker's VERSION, once its line arrived.
    std::optional<std::uint64_t> broker_version() const { return broker_version_; }
    /// Set when the connection cannot go on: a `*` FAIL, a bad line, EOF.
    /// Requests still in flight will never be answered.
    const std::optional<Error>& fatal() const { return fatal_; }

    /// The answer for `tag`, once it arrived.
    std::optional<Answer> take(const std::string& tag);
    /// The oldest answer not yet taken, with its tag.
    std::optional<std::pair<std::string, Answer>> take_next();
    /// EXPIRED events not yet taken, oldest first.
    std::vector<Expired> take_expired();
    /// Whatever came first of the answers and EXPIRED events not yet taken
    /// (the order of the lines on the wire).
    struct Event {
        std::optional<std::pair<std::string, Answer>> answer;
        std::optional<Expired> expired;
    };
    std::optional<Event> take_event();
    /// Descriptors received but not (yet) claimed by a LEASE OK line.
    std::size_t unclaimed_fds() const { return fds_.size(); }

private:
    struct Pending {
        protocol::Verb verb;
        std::string label;
    };

    void line(std::string_view text);
    void fail(Error why);

    protocol::LineReader reader_{protocol::max_reply_length}; /// STATUS lines grow with the workers
    std::map<std::string, Pending> in_flight_;
    std::deque<spawn::unique_fd> fds_;
    struct Done {
        std::uint64_t seq;
        std::string tag;
        Answer answer;
    };
    struct Ended {
        std::uint64_t seq;
        Expired expired;
    };
    std::uint64_t seq_ = 0; ///< orders answers and EXPIRED events by arrival
    std::deque<Done> done_;
    std::deque<Ended> expired_;
    std::optional<std::uint64_t> broker_version_;
    std::optional<Error> fatal_;
};

} // namespace foreman::client
