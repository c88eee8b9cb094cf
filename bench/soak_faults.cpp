#include "bench/soak_faults.hpp"

#include "bench/lease_holder.hpp"
#include "bench/load_runner.hpp"
#include "bench/soak_broker_state.hpp"
#include "bench/soak_client.hpp"
#include "bench/soak_raw_control.hpp"

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <poll.h>
#include <stdexcept>
#include <thread>
#include <unistd.h>

namespace foreman::bench {

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using namespace std::chrono_literals;

std::uint64_t splitmix64(std::uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

std::string ms_text(Clock::duration d) {
    return std::to_string(std::chrono::duration_cast<milliseconds>(d).count()) + " ms";
}

std::string ids_text(const std::vector<std::uint64_t>& ids) {
    std::string out;
    for (auto id : ids) out += (out.empty() ? "" : ",") + std::to_string(id);
    return out;
}

/// Polls STATUS until none of `ids` is held by a worker, or `deadline`;
/// returns those still held.
std::vector<std::uint64_t> still_live(SoakClient& c, std::vector<std::uint64_t> ids, Clock::time_point deadline) {
    for (;;) {
        auto status = c.status();
        std::erase_if(ids, [&](std::uint64_t id) { return !lease_live(status, id); });
        if (ids.empty() || Clock::now() >= deadline) return ids;
        std::this_thread::sleep_for(5ms);
    }
}

/// Waits for end of file (or a reset) on a worker connection; false when
/// `deadline` passes first.
bool worker_closed(int fd, Clock::time_point deadline) {
    char buf[256];
    for (;;) {
        auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
        if (left <= 0) return false;
        pollfd p{fd, POLLIN, 0};
        int r = ::poll(&p, 1, static_cast<int>(left));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return false;
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN)) return true;
    }
}

protocol::Request lease_id_request(protocol::Verb verb, std::uint64_t id) {
    protocol::Request r{};
    r.verb = verb;
    r.lease_id = id;
    return r;
}

/// "FAIL no-such-lease" as it should be, else what came instead.
std::string expect_no_such_lease(const client::Answer& a, std::uint64_t id) {
    const auto& r = a.reply;
    if (r.kind == protocol::Reply::Kind::fail && r.code == protocol::FailCode::no_such_lease) return {};
    std::string got = r.kind == protocol::Reply::Kind::ok ? "OK"
                                                           : "FAIL " + std::string(protocol::to_string(r.code));
    return a.label + " of lease " + std::to_string(id) + " answered " + got + ", not FAIL no-such-lease";
}

// ---- session-close --------------------------------------------------------------

std::string session_close(SoakClient& c, std::mt19937_64& rng) {
    const int n = 1 + static_cast<int>(rng() % 2);
    std::vector<spawn::unique_fd> workers; // kept open: only the close may end the leases
    std::vector<std::uint64_t> ids;
    for (int i = 0; i < n; ++i) {
        auto lease = c.request([&] { return c.conn().lease(c.setup().pool); });
        ids.push_back(lease.id());
        workers.push_back(lease.take_fd());
        lease.forget();
    }
    c.reconnect();
    auto left = still_live(c, ids, Clock::now() + c.setup().prompt);
    workers.clear(); // the workers see the end of their connection and say READY=1
    if (!left.empty())
        return "session lease " + ids_text(left) + " still live " + ms_text(c.setup().prompt) +
               " after its connection closed";
    return {};
}

// ---- client-kill ------------------------------------------------------------------

std::string client_kill(SoakClient& c) {
    // A process of its own (foreman-bench tune --hold-lease), so the kernel
    // closes its sockets as it would for any crashed client.
    LeaseHolder holder(c.setup().socket, c.setup().plain_pool, 60s, false);
    const std::uint64_t id = holder.lease_id();
    holder.kill_now();
    holder.finish();
    auto left = still_live(c, {id}, Clock::now() + c.setup().prompt);
    if (!left.empty())
        return "lease " + std::to_string(id) + " of a SIGKILLed client still live " + ms_text(c.setup().prompt) +
               " later";
    return {};
}

// ---- detached-ttl -----------------------------------------------------------------

std::string detached_ttl(SoakClient& c, std::mt19937_64& rng) {
    const auto ttl = c.setup().detached_ttl;
    // The lease cannot end by its ttl before `from` + ttl: `from` is taken
    // before the request that set its expiry was sent.
    auto from = Clock::now();
    std::uint64_t id = 0;
    {
        auto other = client::Connection::connect(c.setup().socket);
        client::LeaseOptions o;
        o.detach = true;
        o.ttl_ms = static_cast<std::uint64_t>(ttl.count());
        auto lease = c.request([&] { return other.lease(c.setup().plain_pool, o); });
        id = lease.id();
        lease.take_fd().reset();
        lease.forget();
    } // its connection closes; the lease lives on
    if (rng() % 2 == 0) {
        // Renewable from any connection of the same uid.
        from = Clock::now();
        auto a = c.ask(lease_id_request(protocol::Verb::renew, id));
        if (a.reply.kind != protocol::Reply::Kind::ok)
            return "RENEW of detached lease " + std::to_string(id) + " from another connection: FAIL " +
                   std::string(protocol::to_string(a.reply.code)) + " " + a.reply.text;
        if (client::decode_renew(a) != ttl)
            return "RENEW of detached lease " + std::to_string(id) + " gave ttl " +
                   std::to_string(client::decode_renew(a).count()) + ", not its own " + std::to_string(ttl.count());
    }
    const auto hard = from + ttl + c.setup().prompt;
    for (;;) {
        auto status = c.status();
        auto seen = Clock::now();
        if (!lease_live(status, id)) {
            if (seen - from < ttl)
                return "detached lease " + std::to_string(id) + " ended " + ms_text(seen - from) +
                       " after it was granted or renewed, before its ttl of " + ms_text(ttl);
            return {};
        }
        if (seen >= hard)
            return "detached lease " + std::to_string(id) + " still live " + ms_text(seen - from) +
                   " after it was granted or renewed (ttl " + ms_text(ttl) + ")";
        std::this_thread::sleep_for(10ms);
    }
}

// ---- worker-kill and worker-stop --------------------------------------------------

/// After the leased worker was killed or stopped: EXPIRED worker-exit and
/// end of file, both by `deadline`, then RELEASE answered no-such-lease.
std::string expect_worker_end(SoakClient& c, client::Lease& lease, Clock::time_point deadline, bool& closed) {
    auto reason = c.await_watched(deadline);
    closed = worker_closed(lease.fd(), deadline);
    lease.take_fd().reset();
    lease.forget();
    const std::string id = std::to_string(lease.id());
    if (!reason) return "no EXPIRED for lease " + id + " by the deadline";
    if (*reason != protocol::EndReason::worker_exit)
        return "lease " + id + " EXPIRED " + std::string(protocol::to_string(*reason)) + ", not worker-exit";
    if (!closed) return "the worker connection of lease " + id + " saw no end of file";
    return expect_no_such_lease(c.ask(lease_id_request(protocol::Verb::release, lease.id())), lease.id());
}

std::string worker_signal(SoakClient& c, const std::string& pool, int signal, Clock::duration allowed) {
    auto lease = c.request([&] { return c.conn().lease(pool); });
    std::vector<char> out(16, 'k'), in(16);
    // Once it has echoed, the worker is serving this connection (and beating).
    if (!echo_round_trip(lease.fd(), out, in)) {
        lease.take_fd().reset();
        try {
            c.request([&] { lease.release(); });
        } catch (const client::Error& e) {
            if (e.kind() != client::Error::Kind::refused) throw;
        }
        return "echo through worker " + std::to_string(lease.worker_pid()) + " failed";
    }
    c.watch(lease.id());
    const pid_t pid = lease.worker_pid();
    ::kill(pid, signal);
    bool closed = false;
    std::string why = expect_worker_end(c, lease, Clock::now() + allowed, closed);
    if (signal == SIGSTOP && !closed) ::kill(pid, SIGCONT); // not killed: let it go on
    return why;
}

// ---- garbage ----------------------------------------------------------------------

/// A line that is not a request: each gets exactly one FAIL.
std::string garbage_line(std::mt19937_64& rng, int number) {
    const std::string tag = "g" + std::to_string(number);
    switch (rng() % 16) {
    case 0: return "LEASE";
    case 1: return "LEASE\t" + tag;
    case 2: return "LEASE\tbad tag!\tsoak";
    case 3: return "FROB\t" + tag;
    case 4: return "LEASE\t" + tag + "\tsoak\tcolour=blue";
    case 5: return "LEASE\t" + tag + "\tsoak\tttl_ms=-1";
    case 6: return "LEASE\t" + tag + "\tsoak\tdetach=2";
    case 7: return "LEASE\t" + tag + "\tsoak\twait_ms=1\twait_ms=2";
    case 8: return "RENEW\t" + tag + "\tnot-a-number";
    case 9: return "RELEASE\t" + tag + "\t1\t2";
    case 10: return "STATUS\t" + tag + "\textra";
    case 11: return "LEASE\t" + tag + "\tno-such-pool";
    case 12: return "STATUS\t" + std::string(65, 'a');
    case 13: return "";
    default: {
        // Random bytes, anything but '\n'.
        std::string s(rng() % 300, '\0');
        for (char& ch : s) {
            ch = static_cast<char>(rng() % 256);
            if (ch == '\n') ch = '\t';
        }
        return s;
    }
    }
}

std::string garbage(SoakClient& c, std::mt19937_64& rng) {
    auto& t = c.tally();
    const auto deadline = Clock::now() + c.setup().prompt;
    RawControl raw(c.setup().socket);
    auto version = raw.line(deadline);
    if (!version || version != "VERSION\tforeman\t1000") return "no VERSION line from the broker";
    const int variant = static_cast<int>(rng() % 3);
    if (variant == 0) {
        // The first line is not our VERSION.
        ++t.requests;
        raw.send((rng() % 2 ? "VERSION\tforeman\t999" : garbage_line(rng, 0)) + "\n");
        auto reply = raw.line(deadline);
        if (reply) ++t.answered;
        if (reply != "FAIL\t*\tversion\tsupported: 1000")
            return "a bad first line got '" + reply.value_or("<nothing>") + "', not FAIL * version";
        if (!raw.closed(deadline)) return "the connection stayed open after a bad first line";
        return {};
    }
    raw.send("VERSION\tforeman\t1000\n");
    const int k = 1 + static_cast<int>(rng() % 6);
    std::string lines;
    for (int i = 1; i <= k; ++i) lines += garbage_line(rng, i) + "\n";
    lines += "STATUS\tprobe\n";
    t.requests += static_cast<std::uint64_t>(k) + 1;
    raw.send(lines);
    int fails = 0;
    bool probed = false;
    while (!probed || fails < k) {
        auto reply = raw.line(deadline);
        if (!reply) break;
        if (reply->rfind("FAIL\t", 0) == 0) ++fails;
        else if (reply->rfind("OK\tprobe\t", 0) == 0) probed = true;
        else return "garbage got '" + reply->substr(0, 80) + "'";
    }
    t.answered += static_cast<std::uint64_t>(std::min(fails, k)) + (probed ? 1 : 0);
    if (fails != k || !probed)
        return std::to_string(k) + " garbage lines got " + std::to_string(fails) + " FAIL" +
               (probed ? "" : ", and STATUS no answer");
    if (variant == 1) return {};
    // One line over the limit: answered, then the connection is closed.
    ++t.requests;
    bool answered = false;
    auto why = over_long_line_refused(raw, protocol::max_line_length + 1 + rng() % 1000, deadline, answered);
    if (answered) ++t.answered;
    return why;
}

// ---- unknown-lease ----------------------------------------------------------------

std::string unknown_lease(SoakClient& c, std::mt19937_64& rng) {
    // Never granted (0, far beyond any id), ended (our last), and another
    // client's session lease (live or not, never ours to touch).
    std::vector<std::uint64_t> ids{0, (std::uint64_t{1} << 62) + rng() % (std::uint64_t{1} << 62)};
    if (c.last_lease() != 0) ids.push_back(c.last_lease());
    if (auto other = c.shared().recent_lease.load(); other != 0) ids.push_back(other);
    for (auto id : ids) {
        const bool renew_first = rng() % 2 == 0;
        for (auto verb : {renew_first ? protocol::Verb::renew : protocol::Verb::release,
                          renew_first ? protocol::Verb::release : protocol::Verb::renew}) {
            auto why = expect_no_such_lease(c.ask(lease_id_request(verb, id)), id);
            if (!why.empty()) return why;
        }
    }
    return {};
}

} // namespace

std::string_view soak_fault_name(SoakFault kind) {
    switch (kind) {
    case SoakFault::session_close: return "session-close";
    case SoakFault::client_kill: return "client-kill";
    case SoakFault::detached_ttl: return "detached-ttl";
    case SoakFault::worker_kill: return "worker-kill";
    case SoakFault::worker_stop: return "worker-stop";
    case SoakFault::garbage: return "garbage";
    case SoakFault::unknown_lease: return "unknown-lease";
    }
    return "?";
}

std::vector<SoakFault> parse_soak_faults(const std::string& list) {
    std::vector<SoakFault> out;
    std::size_t at = 0;
    while (at <= list.size()) {
        auto comma = std::min(list.find(',', at), list.size());
        std::string_view name(list.data() + at, comma - at);
        auto it = std::find_if(soak_fault_kinds.begin(), soak_fault_kinds.end(),
                               [&](SoakFault k) { return soak_fault_name(k) == name; });
        if (it == soak_fault_kinds.end()) throw std::invalid_argument("unknown fault '" + std::string(name) + "'");
        if (std::find(out.begin(), out.end(), *it) == out.end()) out.push_back(*it);
        at = comma + 1;
    }
    return out;
}

SoakFault soak_fault_for(std::uint64_t seed, std::uint64_t n, const std::vector<SoakFault>& kinds,
                         std::mt19937_64& rng) {
    const std::uint64_t round = n / kinds.size();
    std::mt19937_64 round_rng(splitmix64(seed ^ splitmix64(round)));
    auto order = kinds;
    std::shuffle(order.begin(), order.end(), round_rng);
    rng.seed(splitmix64(splitmix64(seed) ^ n));
    return order[n % order.size()];
}

std::string inject_fault(SoakFault kind, SoakClient& c, std::mt19937_64& rng) {
    const auto& s = c.setup();
    switch (kind) {
    case SoakFault::session_close: return session_close(c, rng);
    case SoakFault::client_kill: return client_kill(c);
    case SoakFault::detached_ttl: return detached_ttl(c, rng);
    case SoakFault::worker_kill: return worker_signal(c, rng() % 2 ? s.pool : s.plain_pool, SIGKILL, s.prompt);
    case SoakFault::worker_stop:
        return worker_signal(c, s.pool, SIGSTOP, s.heartbeat_timeout + s.kill_grace + s.prompt);
    case SoakFault::garbage: return garbage(c, rng);
    case SoakFault::unknown_lease: return unknown_lease(c, rng);
    }
    return "unknown fault";
}

} // namespace foreman::bench
