#include "bench/fault_injector.hpp"

#include "bench/lease_holder.hpp"
#include "bench/pool_status.hpp"
#include "client/connection.hpp"

#include <csignal>
#include <cstdio>
#include <stdexcept>

namespace foreman::bench {

using Clock = std::chrono::steady_clock;

std::string_view fault_name(FaultKind kind) {
    switch (kind) {
    case FaultKind::client_kill: return "client-kill";
    case FaultKind::detached: return "detached";
    case FaultKind::worker_stop: return "worker-stop";
    }
    return "?";
}

std::string fault_id(FaultKind kind) {
    std::string s(fault_name(kind));
    for (char& c : s)
        if (c == '-') c = '_';
    return s;
}

std::string fault_pool(FaultKind kind) { return "fault_" + fault_id(kind); }

FaultInjector::FaultInjector(std::string socket, FaultKind kind, double rate, std::chrono::milliseconds probe_wait)
    : socket_(std::move(socket)), kind_(kind),
      period_(std::chrono::nanoseconds(static_cast<std::int64_t>(rate > 0 ? 1e9 / rate : 0))),
      probe_wait_(probe_wait), thread_([this] { run(); }) {}

FaultInjector::~FaultInjector() { stop(); }

void FaultInjector::stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
}

void FaultInjector::run() {
    while (stats_.injected == 0 || !stop_.load()) {
        auto started = Clock::now();
        try {
            one_fault();
        } catch (const std::exception& e) {
            ++stats_.unrecovered;
            std::fprintf(stderr, "foreman-bench tune: %s fault: %s\n", std::string(fault_name(kind_)).c_str(), e.what());
            if (stats_.injected == 0) ++stats_.injected; // count it, so that a broken pool cannot loop forever
        }
        while (!stop_.load() && Clock::now() < started + period_)
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
}

void FaultInjector::one_fault() {
    const std::string pool = fault_pool(kind_);
    auto probe = client::Connection::connect(socket_);
    LeaseHolder holder(socket_, pool, probe_wait_, kind_ == FaultKind::detached);

    // The probe waits for the pool's only worker before the fault happens.
    client::LeaseOptions o;
    o.wait_ms = static_cast<std::uint64_t>(probe_wait_.count());
    std::string tag = probe.send_lease(pool, o);
    auto queued_by = Clock::now() + std::chrono::seconds(5);
    while (pool_queued(probe.status(), pool) < 1) {
        if (Clock::now() > queued_by) throw std::runtime_error("the probe's LEASE never showed as queued");
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }

    const pid_t worker = holder.worker_pid();
    auto fault_at = Clock::now();
    switch (kind_) {
    case FaultKind::client_kill:
    case FaultKind::detached: holder.kill_now(); break;
    case FaultKind::worker_stop: ::kill(worker, SIGSTOP); break;
    }
    ++stats_.injected;

    client::Answer a = probe.wait(tag);
    auto granted_at = Clock::now();
    if (kind_ == FaultKind::worker_stop) ::kill(worker, SIGCONT); // harmless once the broker killed it
    holder.finish();
    if (a.reply.kind != protocol::Reply::Kind::ok) {
        ++stats_.unrecovered;
        return;
    }
    stats_.recovery.record(static_cast<std::uint64_t>((granted_at - fault_at).count()));
    // Hand the worker back: close our end (a notify=foreman worker says
    // READY=1 on it, which may end the lease first), then RELEASE.
    client::LeaseGrant grant = client::decode_lease(std::move(a));
    grant.fd.reset();
    try {
        probe.release(grant.lease_id);
    } catch (const client::Error& e) {
        if (!e.is(protocol::FailCode::no_such_lease)) throw;
    }
}

} // namespace foreman::bench
