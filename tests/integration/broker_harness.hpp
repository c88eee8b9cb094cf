#pragma once
// A real broker in the test process, on its own thread, with its runtime
// directory in a per-test temporary folder; and a client that records what
// the broker tells it. Waits are on events (the broker's observer, a pidfd),
// never on fixed sleeps.

#include "broker/broker.hpp"

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace foreman::test {

using namespace std::chrono_literals;

/// How much slower a sanitizer build runs: limits on how long something may
/// take are multiplied by it (never the durations under test themselves).
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
inline constexpr int sanitizer_slowdown = 5;
#else
inline constexpr int sanitizer_slowdown = 1;
#endif

/// The running test binary (it doubles as a worker: test_worker.hpp).
std::string self_exe();

/// mkdtemp, removed with everything in it at the end.
class TempDir {
public:
    TempDir();
    ~TempDir();
    const std::string& path() const { return path_; }

private:
    std::string path_;
};

/// Waits until process `pid` (any process, not only a child) has exited.
bool wait_pid_gone(int pid, std::chrono::milliseconds timeout);
/// Whether `pid` is a zombie (exited, not reaped).
bool is_zombie(int pid);
/// The descriptors process `pid` has open: fd number → what it points to.
std::map<int, std::string> open_fds(int pid);

/// What a program run by run_process did.
struct ProcessResult {
    int status = -1;         ///< exit status, or 128 + signal
    bool timed_out = false;  ///< killed for running longer than the limit
    std::string out;         ///< its stdout
    std::string err;         ///< its stderr
};

/// Runs `argv` (argv[0] a path) with `input` on its stdin, its stdout and
/// stderr captured, and the test's environment minus FOREMAN_SOCKET plus
/// `env` ("KEY=VALUE"). Kills it after `timeout`.
ProcessResult run_process(const std::vector<std::string>& argv, const std::string& input = {},
                          const std::vector<std::string>& env = {}, std::chrono::milliseconds timeout = 20s);

struct Granted {
    lease::Ticket ticket;
    lease::LeaseId lease;
    int pid;
    std::chrono::milliseconds ttl;
    spawn::unique_fd conn;
};

struct Rejected {
    lease::Ticket ticket;
    protocol::FailCode code;
    std::string text;
};

/// A client of the broker that records what it is told.
class TestClient : public broker::ClientEvents {
public:
    void granted(lease::Ticket, lease::LeaseId, int, std::chrono::milliseconds, spawn::unique_fd) override;
    void rejected(lease::Ticket, protocol::FailCode, const std::string&) override;
    void expired(lease::LeaseId, protocol::EndReason) override;

    std::optional<Granted> wait_granted(lease::Ticket ticket, std::chrono::milliseconds timeout = 10s);
    std::optional<Rejected> wait_rejected(lease::Ticket ticket, std::chrono::milliseconds timeout = 10s);
    std::optional<protocol::EndReason> wait_expired(lease::LeaseId lease, std::chrono::milliseconds timeout = 10s);

    lease::ClientId id = 0;

private:
    std::mutex mu_;
    std::condition_variable cv_;
    std::map<lease::Ticket, Granted> granted_;
    std::map<lease::Ticket, Rejected> rejected_;
    std::map<lease::LeaseId, protocol::EndReason> expired_;
};

class BrokerHarness {
public:
    /// `ini` is the config file's text; runtime_dir is set to a fresh
    /// temporary folder unless `ini` sets it. `{self}` in it is replaced by
    /// the test binary's path.
    explicit BrokerHarness(std::string ini);
    ~BrokerHarness();

    broker::Broker& broker() { return *broker_; }
    const std::string& dir() const { return dir_.path(); }
    std::string runtime_dir() const { return dir_.path() + "/run"; }
    lease::Snapshot snapshot() { return broker_->snapshot(); }
    /// Waits until `pred` holds for the broker's state.
    bool wait_for(const std::function<bool(const lease::Snapshot&)>& pred, std::chrono::milliseconds timeout = 10s);

    std::shared_ptr<TestClient> client();
    /// Asks for a lease; the answer arrives through `client`.
    lease::Ticket ask(TestClient& client, const std::string& protocol, const std::string& user = {},
                      std::optional<std::chrono::milliseconds> wait = std::nullopt,
                      std::optional<std::chrono::milliseconds> ttl = std::nullopt);
    /// Asks and waits for the grant (fails the test when it is not granted).
    Granted lease(TestClient& client, const std::string& protocol, const std::string& user = {});

    /// Graceful stop; returns how long it took run() to return.
    std::chrono::milliseconds stop();

private:
    TempDir dir_;
    std::unique_ptr<broker::Broker> broker_;
    std::thread thread_;
    bool stopped_ = false;
    lease::Ticket next_ticket_ = 1;
    std::mutex mu_;
    std::condition_variable cv_;
    std::uint64_t generation_ = 0;
    std::chrono::steady_clock::time_point run_returned_;
};

/// Writes `text` to `fd` (a worker connection) and reads back as many bytes.
std::string echo_through(int fd, const std::string& text);

/// build/bin/foreman-echo, the example worker.
std::string echo_worker();
/// The control socket of `h`'s broker when its config names none.
std::string control_socket(const BrokerHarness& h);

/// Every worker of every pool, flattened.
std::vector<lease::WorkerView> all_workers(const lease::Snapshot& s);
/// Number of workers of `protocol` in `state`.
std::size_t count_state(const lease::Snapshot& s, const std::string& protocol, lease::WorkerState state);

} // namespace foreman::test
