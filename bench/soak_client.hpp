#pragma once
// One of foreman-bench soak's clients: a thread on its own control
// connection that takes cycles from a shared budget (LEASE -> echo through
// the worker -> close -> RELEASE) and, on every fault_every-th cycle, injects
// a fault first (bench/soak_faults.hpp). It counts every request it sends
// and every answer it gets: a request whose connection broke before its
// answer came is unanswered, which the soak reports as a failure.

#include "bench/histogram.hpp"
#include "bench/soak_faults.hpp"
#include "client/connection.hpp"

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

namespace foreman::bench {

struct SoakSetup {
    std::string socket;
    std::string pool = "soak";        ///< notify=foreman, heartbeat_timeout_ms set
    std::string plain_pool = "plain"; ///< notify=none: only RELEASE, ttl or an exit end a lease
    std::uint64_t cycles = 1'000'000;
    std::uint64_t fault_every = 1000; ///< 0: no faults
    std::vector<SoakFault> faults{soak_fault_kinds.begin(), soak_fault_kinds.end()}; ///< the kinds injected
    std::uint64_t seed = 1;
    std::uint64_t plain_every = 4;    ///< every plain_every-th cycle leases from plain_pool
    std::size_t payload = 64;
    std::chrono::milliseconds heartbeat_timeout{1000};
    std::chrono::milliseconds kill_grace{500};
    std::chrono::milliseconds detached_ttl{500};
    /// How soon a lease must be gone once its holder's connection closed:
    /// "at once", but with room for a loaded machine; far below the pools'
    /// lease_ttl_ms, so the ttl cannot be what ended it.
    std::chrono::milliseconds prompt{3000};
};

struct FaultCount {
    std::uint64_t injected = 0;
    std::uint64_t failed = 0;
};

/// What clients counted; one per client, merged at the end.
struct SoakTally {
    std::uint64_t cycles = 0;
    std::uint64_t requests = 0;
    std::uint64_t answered = 0;
    std::uint64_t broken_connections = 0; ///< io or protocol errors; each one reconnects
    Histogram cycle;                      ///< ns, LEASE sent -> RELEASE answered
    std::map<std::string, std::uint64_t> cycle_errors;      ///< FAIL codes, "echo", ...
    std::map<std::string, std::uint64_t> expired;           ///< EXPIRED of ordinary cycles, by reason
    std::array<FaultCount, soak_fault_kinds.size()> faults{};
    std::vector<std::string> failures;                      ///< the first few, one line each

    void note_failure(std::string what);
    void merge(const SoakTally& other);
};

/// What every client shares.
struct SoakShared {
    std::atomic<std::uint64_t> next{0}; ///< cycles handed out
    std::atomic<std::uint64_t> done{0}; ///< cycles completed
    std::atomic<std::uint64_t> faults{0};
    std::atomic<std::uint64_t> faults_failed{0};
    /// The session lease some client took last: another client's lease for
    /// the unknown-lease fault (never renewable by anyone else).
    std::atomic<std::uint64_t> recent_lease{0};
    std::atomic<bool> stop{false};
    std::atomic<int> finished{0}; ///< clients whose run() returned
};

class SoakClient {
public:
    SoakClient(const SoakSetup& setup, SoakShared& shared, SoakTally& tally);
    /// Cycles until the budget is spent or shared.stop is set.
    void run();

    // ---- for the faults ---------------------------------------------------------
    const SoakSetup& setup() const { return setup_; }
    SoakShared& shared() { return shared_; }
    SoakTally& tally() { return tally_; }
    client::Connection& conn() { return *conn_; }
    /// Closes the control connection (its session leases end) and opens a new one.
    void reconnect();
    /// The lease this client's previous cycle took (ended since).
    std::uint64_t last_lease() const { return last_lease_; }

    /// Runs `call`, one request on any connection, counting it as sent and,
    /// unless the connection broke first (client::Error io or protocol),
    /// as answered. Errors are rethrown.
    template <class F>
    auto request(F&& call) -> decltype(call()) {
        ++tally_.requests;
        try {
            if constexpr (std::is_void_v<decltype(call())>) {
                call();
                ++tally_.answered;
            } else {
                auto r = call();
                ++tally_.answered;
                return r;
            }
        } catch (const client::Error& e) {
            if (e.kind() == client::Error::Kind::refused) ++tally_.answered;
            throw;
        }
    }
    /// STATUS on conn(), counted.
    boost::json::value status();
    /// Sends `r` on conn() and returns its answer, OK or FAIL, counted.
    client::Answer ask(protocol::Request r);

    /// From now on the EXPIRED of `lease` is kept for expired_reason()
    /// instead of being counted as an ordinary cycle's.
    void watch(std::uint64_t lease);
    std::optional<protocol::EndReason> watched_reason() const { return watched_reason_; }
    /// Reads from conn() until the watched lease's EXPIRED arrives or
    /// `deadline` passes.
    std::optional<protocol::EndReason> await_watched(std::chrono::steady_clock::time_point deadline);

private:
    void connect();
    void cycle(std::uint64_t index);
    void fault(std::uint64_t n);

    const SoakSetup& setup_;
    SoakShared& shared_;
    SoakTally& tally_;
    std::optional<client::Connection> conn_;
    std::vector<char> out_, in_;
    std::uint64_t last_lease_ = 0;
    std::uint64_t watched_ = 0;
    std::optional<protocol::EndReason> watched_reason_;
};

} // namespace foreman::bench
