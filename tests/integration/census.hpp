#pragma once
// What must hold after a fault (issue 6): foreman loses nothing. A Census is
// taken before the fault; expect_nothing_lost() after it waits, polling
// under a deadline, until
// - no lease is live, no LEASE is queued and no worker is stopping;
// - the broker process has no zombie child;
// - no orphan: every worker pid the census saw is alive and in the broker's
//   state, or gone, and no process lives on in the session of a worker that
//   is gone (workers run setsid, so a worker's session id is its pid);
// - the broker's descriptors are back to the baseline: counted by kind
//   (socket, pipe, pidfd, ...), each worker process allowed its pidfd and
//   output pipe, the descriptors the test holds on purpose left out, and
//   Asio's own (epoll, eventfd, timerfd: one set per io_context, made on
//   first use) not counted;
// - every request the test recorded got its answer.
// expect_no_survivor() is the check for a broker that is gone (SIGKILL,
// SIGTERM): no worker, and nothing in a worker's session, outlives it.
//
// Two brokers can be counted: the in-process one of a BrokerHarness (whose
// descriptors are the test process's: take the census with the connections
// the test keeps through the check open already, close the others before
// the check, and name descriptors it gains and keeps with hold()), or a
// foreman process, read through STATUS. Either way the census opens a
// control connection of its own before its baseline (so the broker serves
// already) and keeps it; the baseline is taken when no spawn is in flight.

#include "broker_harness.hpp"

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace foreman::test {

/// What the census reads of the broker at one moment.
struct BrokerState {
    std::vector<int> worker_pids; ///< of workers whose process runs (pid known)
    std::size_t leases = 0;       ///< live leases
    std::size_t queued = 0;       ///< LEASEs waiting, over all pools
    std::size_t stopping = 0;     ///< workers being retired
    std::size_t spawning = 0;     ///< workers whose process is not reported yet
};

class Census {
public:
    /// The in-process broker of `h`.
    explicit Census(BrokerHarness& h);
    /// The foreman process `pid` that serves `control_socket`.
    Census(int pid, const std::string& control_socket);
    ~Census();
    Census(const Census&) = delete;
    Census& operator=(const Census&) = delete;

    /// Leaves descriptor `fd` of the test process out of the count (a lease
    /// descriptor the test keeps): only meaningful for the in-process broker.
    void hold(int fd);
    /// Records the workers that run now (the census also looks when it is
    /// taken and when it checks): a test calls it when a worker it did not
    /// lease itself may come and go before the check.
    void look();
    /// Records a worker pid the test learnt otherwise (a lease's worker_pid).
    void saw_worker(int pid);
    /// A request sent that must get its answer; answered() marks it done.
    void expect_answer(const std::string& request);
    void answered(const std::string& request);

    /// The broker lives: waits until nothing is lost (see above), then checks.
    void expect_nothing_lost(std::chrono::milliseconds timeout = std::chrono::milliseconds(5000) *
                                                                   sanitizer_slowdown);
    /// The broker process is gone: every worker seen, and every process in
    /// its session, ends within `timeout`; every request recorded was answered.
    void expect_no_survivor(std::chrono::milliseconds timeout = std::chrono::milliseconds(5000) *
                                                                  sanitizer_slowdown);

    /// Descriptor kinds of `pid` ("socket", "pipe", "anon_inode:[pidfd]", a
    /// path), each with how many there are, leaving out `skip`.
    static std::map<std::string, int> descriptor_kinds(int pid, const std::set<int>& skip = {});
    /// Processes (not zombies) whose session id is `sid`.
    static std::vector<int> session_members(int sid);
    /// Zombie children of process `pid` (of any of its threads).
    static std::vector<int> zombie_children(int pid);

    /// Where the census reads the broker's state (defined in census.cpp).
    struct Reader;

private:
    /// What is lost now; empty when nothing is.
    std::vector<std::string> losses(const BrokerState& now);
    std::vector<std::string> unanswered() const;
    std::vector<std::string> survivors() const;

    /// Reads the state and the descriptors until both hold still.
    void take_baseline();

    int pid_;
    std::unique_ptr<Reader> reader_;
    std::set<int> held_;
    std::set<int> seen_;
    std::size_t base_workers_ = 0;
    std::map<int, std::string> base_fds_; ///< fd → target, at the baseline
    std::map<std::string, bool> answers_; ///< request → answered
};

} // namespace foreman::test
