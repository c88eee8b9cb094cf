#include "client/reply_demux.hpp"

#include "client/request_line.hpp"

#include <algorithm>

namespace foreman::client {

void ReplyDemux::sent(const protocol::Request& request) {
    in_flight_[request.tag] = Pending{request.verb, request_label(request)};
}

void ReplyDemux::unsent(const std::string& tag) { in_flight_.erase(tag); }

void ReplyDemux::received(std::size_t n, std::vector<spawn::unique_fd>& fds) {
    reader_.commit(n);
    for (auto& fd : fds) fds_.push_back(std::move(fd));
    fds.clear();
    std::string_view text;
    while (!fatal_) {
        auto r = reader_.next(text);
        if (r == protocol::LineReader::Result::need_more) break;
        if (r == protocol::LineReader::Result::too_long) {
            fail(Error(Error::Kind::protocol, "the broker sent a line longer than " +
                                                  std::to_string(protocol::max_reply_length) + " bytes"));
            break;
        }
        line(text);
    }
}

void ReplyDemux::received(std::string_view bytes) {
    std::vector<spawn::unique_fd> none;
    char* p = prepare(bytes.size());
    std::copy(bytes.begin(), bytes.end(), p);
    received(bytes.size(), none);
}

void ReplyDemux::failed(Error why) { fail(std::move(why)); }

void ReplyDemux::fail(Error why) {
    if (!fatal_) fatal_ = std::move(why);
}

void ReplyDemux::line(std::string_view text) {
    std::string error;
    auto reply = protocol::parse_reply(text, error);
    if (!reply) return fail(Error(Error::Kind::protocol, "the broker sent a bad line: " + error));
    using Kind = protocol::Reply::Kind;
    if (!broker_version_ && reply->kind != Kind::version && !(reply->kind == Kind::fail && reply->tag == "*"))
        return fail(Error(Error::Kind::protocol, "the broker's first line is not VERSION"));
    switch (reply->kind) {
    case Kind::version:
        if (broker_version_) return; // a repeated VERSION says nothing new
        broker_version_ = reply->version;
        if (reply->version != protocol::protocol_version)
            fail(Error("VERSION", protocol::FailCode::version,
                       "the broker speaks protocol version " + std::to_string(reply->version) + ", this client " +
                           std::to_string(protocol::protocol_version)));
        return;
    case Kind::expired:
        expired_.push_back(Ended{seq_++, Expired{reply->lease, reply->reason}});
        return;
    case Kind::ok:
    case Kind::fail:
        break;
    }
    if (reply->tag == "*") {
        // Not tied to a request (line too long, version, max_clients): the
        // broker closes the connection after it, so every request fails.
        if (reply->kind == Kind::fail) return fail(Error("broker", reply->code, reply->text));
        return fail(Error(Error::Kind::protocol, "the broker sent OK with tag '*'"));
    }
    auto it = in_flight_.find(reply->tag);
    if (it == in_flight_.end())
        return fail(Error(Error::Kind::protocol, "the broker answered tag '" + reply->tag + "', never sent"));
    Answer a;
    a.verb = it->second.verb;
    a.label = std::move(it->second.label);
    in_flight_.erase(it);
    if (a.verb == protocol::Verb::lease && reply->kind == Kind::ok && !fds_.empty()) {
        a.fd = std::move(fds_.front());
        fds_.pop_front();
    }
    a.reply = std::move(*reply);
    std::string tag = a.reply.tag;
    done_.push_back(Done{seq_++, std::move(tag), std::move(a)});
}

std::optional<Answer> ReplyDemux::take(const std::string& tag) {
    auto it = std::find_if(done_.begin(), done_.end(), [&](const Done& d) { return d.tag == tag; });
    if (it == done_.end()) return std::nullopt;
    Answer a = std::move(it->answer);
    done_.erase(it);
    return a;
}

std::optional<std::pair<std::string, Answer>> ReplyDemux::take_next() {
    if (done_.empty()) return std::nullopt;
    Done d = std::move(done_.front());
    done_.pop_front();
    return std::make_pair(std::move(d.tag), std::move(d.answer));
}

std::vector<Expired> ReplyDemux::take_expired() {
    std::vector<Expired> out;
    for (auto& e : expired_) out.push_back(e.expired);
    expired_.clear();
    return out;
}

std::optional<ReplyDemux::Event> ReplyDemux::take_event() {
    bool answer_first = !done_.empty() && (expired_.empty() || done_.front().seq < expired_.front().seq);
    Event ev;
    if (answer_first) {
        ev.answer = take_next();
    } else if (!expired_.empty()) {
        ev.expired = expired_.front().expired;
        expired_.pop_front();
    } else {
        return std::nullopt;
    }
    return ev;
}

} // namespace foreman::client
