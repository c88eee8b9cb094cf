#include "bench/soak_client.hpp"

#include "bench/load_runner.hpp"

#include <algorithm>

namespace foreman::bench {

using Clock = std::chrono::steady_clock;

namespace {
/// Failure lines kept per client; the counts say how many there were.
constexpr std::size_t failures_kept = 20;
} // namespace

void SoakTally::note_failure(std::string what) {
    if (failures.size() < failures_kept) failures.push_back(std::move(what));
}

void SoakTally::merge(const SoakTally& o) {
    cycles += o.cycles;
    requests += o.requests;
    answered += o.answered;
    broken_connections += o.broken_connections;
    cycle.merge(o.cycle);
    for (auto& [k, n] : o.cycle_errors) cycle_errors[k] += n;
    for (auto& [k, n] : o.expired) expired[k] += n;
    for (std::size_t i = 0; i < faults.size(); ++i) {
        faults[i].injected += o.faults[i].injected;
        faults[i].failed += o.faults[i].failed;
    }
    for (auto& f : o.failures) note_failure(f);
}

SoakClient::SoakClient(const SoakSetup& setup, SoakShared& shared, SoakTally& tally)
    : setup_(setup), shared_(shared), tally_(tally), out_(setup.payload), in_(setup.payload) {
    for (std::size_t i = 0; i < out_.size(); ++i) out_[i] = static_cast<char>('a' + i % 26);
}

void SoakClient::connect() {
    conn_.reset();
    conn_.emplace(client::Connection::connect(setup_.socket));
    watched_ = 0;
    conn_->on_expired([this](const client::Expired& e) {
        if (watched_ != 0 && e.lease_id == watched_) watched_reason_ = e.reason;
        else ++tally_.expired[std::string(protocol::to_string(e.reason))];
    });
}

void SoakClient::reconnect() { connect(); }

void SoakClient::run() {
    try {
        connect();
    } catch (const client::Error& e) {
        tally_.note_failure(std::string("client cannot connect: ") + e.what());
        ++tally_.broken_connections;
        return;
    }
    while (!shared_.stop.load(std::memory_order_relaxed)) {
        const std::uint64_t index = shared_.next.fetch_add(1);
        if (index >= setup_.cycles) break;
        try {
            if (setup_.fault_every > 0 && !setup_.faults.empty() && (index + 1) % setup_.fault_every == 0) fault(index / setup_.fault_every);
            cycle(index);
        } catch (const client::Error& e) {
            // The connection broke under requests in flight (counted as
            // unanswered): note it and carry on with a new one.
            ++tally_.broken_connections;
            tally_.note_failure(std::string("connection broke: ") + e.what());
            try {
                connect();
            } catch (const client::Error& again) {
                tally_.note_failure(std::string("client cannot reconnect: ") + again.what());
                return;
            }
        }
    }
}

void SoakClient::cycle(std::uint64_t index) {
    const bool plain = setup_.plain_every > 0 && index % setup_.plain_every == setup_.plain_every - 1;
    const std::string& pool = plain ? setup_.plain_pool : setup_.pool;
    const auto t0 = Clock::now();
    client::Lease lease;
    try {
        lease = request([&] { return conn_->lease(pool); });
    } catch (const client::Error& e) {
        if (e.kind() != client::Error::Kind::refused) throw;
        ++tally_.cycle_errors[std::string(protocol::to_string(e.code()))];
        tally_.note_failure("LEASE " + pool + ": " + e.what());
        return;
    }
    last_lease_ = lease.id();
    shared_.recent_lease.store(lease.id(), std::memory_order_relaxed);
    const bool echoed = echo_round_trip(lease.fd(), out_, in_);
    lease.take_fd().reset();
    try {
        request([&] { lease.release(); });
    } catch (const client::Error& e) {
        if (e.kind() != client::Error::Kind::refused) throw;
        // notify=foreman: the worker's READY=1 after our close may end the
        // lease before the RELEASE arrives. A notify=none lease has no such
        // excuse.
        if (!e.is(protocol::FailCode::no_such_lease) || plain) {
            ++tally_.cycle_errors["release " + std::string(protocol::to_string(e.code()))];
            tally_.note_failure("RELEASE " + pool + ": " + e.what());
            return;
        }
    }
    if (!echoed) {
        ++tally_.cycle_errors["echo"];
        tally_.note_failure("echo through a " + pool + " worker failed");
        return;
    }
    tally_.cycle.record(static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count()));
    ++tally_.cycles;
    shared_.done.fetch_add(1, std::memory_order_relaxed);
}

void SoakClient::fault(std::uint64_t n) {
    std::mt19937_64 rng;
    const SoakFault kind = soak_fault_for(setup_.seed, n, setup_.faults, rng);
    auto& count = tally_.faults[static_cast<std::size_t>(kind)];
    ++count.injected;
    shared_.faults.fetch_add(1, std::memory_order_relaxed);
    std::string why;
    try {
        why = inject_fault(kind, *this, rng);
    } catch (const client::Error& e) {
        why = e.what();
        if (e.kind() != client::Error::Kind::refused) {
            watched_ = 0;
            ++count.failed;
            shared_.faults_failed.fetch_add(1, std::memory_order_relaxed);
            tally_.note_failure(std::string(soak_fault_name(kind)) + ": " + why);
            throw;
        }
    } catch (const std::exception& e) {
        why = e.what();
    }
    watched_ = 0;
    if (why.empty()) return;
    ++count.failed;
    shared_.faults_failed.fetch_add(1, std::memory_order_relaxed);
    tally_.note_failure(std::string(soak_fault_name(kind)) + ": " + why);
}

boost::json::value SoakClient::status() {
    return request([&] { return conn_->status(); });
}

client::Answer SoakClient::ask(protocol::Request r) {
    return request([&] { return conn_->wait(conn_->send(std::move(r))); });
}

void SoakClient::watch(std::uint64_t lease) {
    watched_ = lease;
    watched_reason_.reset();
}

std::optional<protocol::EndReason> SoakClient::await_watched(Clock::time_point deadline) {
    while (!watched_reason_) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
        if (left.count() <= 0) break;
        conn_->poll(std::min(left, std::chrono::milliseconds(100)));
    }
    return watched_reason_;
}

} // namespace foreman::bench
