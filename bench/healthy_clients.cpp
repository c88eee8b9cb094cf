#include "bench/healthy_clients.hpp"

#include "bench/load_runner.hpp"
#include "client/connection.hpp"
#include "protocol/end_reason.hpp"

#include <algorithm>
#include <cstring>
#include <optional>
#include <random>
#include <unistd.h>

namespace foreman::bench {

using Clock = std::chrono::steady_clock;

std::uint64_t HealthyResult::false_expiries() const {
    std::uint64_t n = 0;
    for (const char* reason : {"ttl", "worker-exit"})
        if (auto it = expired.find(reason); it != expired.end()) n += it->second;
    return n;
}

HealthyClients::HealthyClients(HealthyOptions options)
    : o_(std::move(options)), tallies_(static_cast<std::size_t>(std::max(o_.clients, 0))) {
    for (int i = 0; i < o_.clients; ++i)
        threads_.emplace_back([this, i] { client(i, tallies_[static_cast<std::size_t>(i)]); });
}

HealthyClients::~HealthyClients() { stop(); }

HealthyResult HealthyClients::stop() {
    stop_ = true;
    for (auto& t : threads_)
        if (t.joinable()) t.join();
    HealthyResult r;
    for (auto& t : tallies_) {
        r.leases += t.leases;
        r.lease_seconds += t.lease_seconds;
        for (auto& [k, n] : t.expired) r.expired[k] += n;
        for (auto& [k, n] : t.errors) r.errors[k] += n;
        r.slip.merge(t.slip);
    }
    return r;
}

void HealthyClients::client(int index, HealthyResult& t) {
    std::vector<char> out(o_.payload, 'x'), in(o_.payload);
    std::mt19937_64 rng(o_.seed * 7919 + static_cast<std::uint64_t>(index));
    std::uniform_real_distribution<double> hold_draw(0, o_.hold_max);
    const auto renew_every = std::max<Clock::duration>(o_.ttl / 3, std::chrono::milliseconds(1));
    try {
        auto conn = client::Connection::connect(o_.socket);
        std::optional<protocol::EndReason> ended;
        std::uint64_t current = 0;
        conn.on_expired([&](const client::Expired& e) {
            ++t.expired[std::string(protocol::to_string(e.reason))];
            if (e.lease_id == current) ended = e.reason;
        });
        while (!stop_.load()) {
            client::Lease lease;
            try {
                client::LeaseOptions lo;
                // Long enough for the other clients' holds to end: a busy
                // here would be the bench's own queueing, not a fault.
                lo.wait_ms = static_cast<std::uint64_t>(
                    2000 + 2 * o_.hold_max * static_cast<double>(o_.ttl.count()));
                lease = conn.lease(o_.protocol, lo);
            } catch (const client::Error& e) {
                if (e.kind() != client::Error::Kind::refused) throw;
                ++t.errors[std::string(protocol::to_string(e.code()))];
                continue;
            }
            ++t.leases;
            current = lease.id();
            ended.reset();
            auto granted = Clock::now();
            auto hold_end = granted + std::chrono::duration_cast<Clock::duration>(o_.ttl * hold_draw(rng));
            auto next_renew = granted + renew_every, next_echo = granted + o_.echo_every;
            for (;;) {
                auto wake = std::min({next_renew, next_echo, hold_end});
                auto now = Clock::now();
                if (wake > now) {
                    conn.poll(std::chrono::ceil<std::chrono::milliseconds>(wake - now)); // EXPIRED arrive here
                    now = Clock::now();
                    if (now >= wake) t.slip.record(static_cast<std::uint64_t>((now - wake).count()));
                }
                if (ended || stop_.load() || now >= hold_end) break;
                if (now >= next_renew) {
                    try {
                        lease.renew();
                    } catch (const client::Error& e) {
                        if (!e.is(protocol::FailCode::no_such_lease)) throw;
                        conn.poll(std::chrono::milliseconds(0));
                        if (!ended) ++t.errors["renew-no-such-lease"];
                        break;
                    }
                    next_renew = Clock::now() + renew_every;
                }
                if (now >= next_echo) {
                    if (!echo_round_trip(lease.fd(), out, in)) {
                        conn.poll(std::chrono::milliseconds(0));
                        if (!ended) ++t.errors["echo"];
                        break;
                    }
                    next_echo += o_.echo_every;
                    if (next_echo < now) next_echo = now + o_.echo_every;
                }
            }
            t.lease_seconds += std::chrono::duration<double>(Clock::now() - granted).count();
            if (!ended) {
                try {
                    lease.release(); // before the close: no READY=1 races the RELEASE
                } catch (const client::Error& e) {
                    if (!e.is(protocol::FailCode::no_such_lease)) throw;
                }
            }
            lease.forget();
            lease.take_fd().reset();
            current = 0;
        }
    } catch (const client::Error& e) {
        ++t.errors[e.kind() == client::Error::Kind::io ? "io" : "protocol"];
    }
}

} // namespace foreman::bench
