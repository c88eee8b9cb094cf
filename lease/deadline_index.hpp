#pragma once
// One ordered index of every deadline the engine keeps: lease TTLs and
// processtime, worker start, heartbeat, idle, lifetime and kill timers,
// waiting requests, pool back-off. s6-fdholderd and libuv's timers work this
// way: the owner arms one OS timer at next(), and pop_due(now) hands back what
// is due, earliest first. Timers live inside the objects they time
// (intrusive, no allocation) and unlink themselves when destroyed, so a
// dropped lease or worker can never fire.

#include <boost/intrusive/set.hpp>

#include <chrono>
#include <cstdint>
#include <optional>

namespace foreman::lease {

using Clock = std::chrono::steady_clock;
using TimePoint = Clock::time_point;

enum class DeadlineKind : std::uint8_t {
    lease_ttl,
    lease_processtime,
    worker_ready,     ///< start_timeout while starting or finishing
    worker_heartbeat, ///< heartbeat_timeout while leased
    worker_idle,      ///< max_idletime while idle
    worker_lifetime,  ///< max_lifetime since spawn
    worker_kill,      ///< kill_grace after SIGTERM
    request_wait,     ///< a queued LEASE's wait deadline
    pool_backoff,     ///< end of a pool's spawn back-off
};

/// One deadline, embedded in its owner. `owner` is the object it times; `kind`
/// says what that object is.
class Timer : public boost::intrusive::set_base_hook<
                  boost::intrusive::link_mode<boost::intrusive::auto_unlink>> {
public:
    Timer(DeadlineKind kind, void* owner) : kind_(kind), owner_(owner) {}
    Timer(const Timer&) = delete;
    Timer& operator=(const Timer&) = delete;

    DeadlineKind kind() const { return kind_; }
    void* owner() const { return owner_; }
    bool armed() const { return is_linked(); }
    TimePoint at() const { return at_; }

private:
    friend class DeadlineIndex;
    DeadlineKind kind_;
    void* owner_;
    TimePoint at_{};
};

class DeadlineIndex {
public:
    DeadlineIndex() = default;
    DeadlineIndex(const DeadlineIndex&) = delete;
    DeadlineIndex& operator=(const DeadlineIndex&) = delete;
    ~DeadlineIndex() { set_.clear(); }

    /// Sets (or moves) `timer` to fire at `at`.
    void arm(Timer& timer, TimePoint at) {
        if (timer.is_linked()) timer.unlink();
        timer.at_ = at;
        // Most deadlines are now + a fixed period, so the latest so far: with
        // end() as the hint the insertion is O(1) instead of a walk down the tree.
        set_.insert(set_.end(), timer);
    }
    void disarm(Timer& timer) {
        if (timer.is_linked()) timer.unlink();
    }
    /// The earliest deadline, if any.
    std::optional<TimePoint> next() const {
        if (set_.empty()) return std::nullopt;
        return set_.begin()->at_;
    }
    /// Unlinks and returns the earliest timer due at `now`, or nullptr.
    Timer* pop_due(TimePoint now) {
        if (set_.empty() || set_.begin()->at_ > now) return nullptr;
        Timer& t = *set_.begin();
        t.unlink();
        return &t;
    }
    std::size_t size() const { return set_.size(); }

private:
    struct ByTime {
        bool operator()(const Timer& a, const Timer& b) const { return a.at_ < b.at_; }
    };
    // Equal deadlines keep insertion order (multiset inserts at the upper
    // bound), so expiry is deterministic.
    boost::intrusive::multiset<Timer, boost::intrusive::compare<ByTime>,
                               boost::intrusive::constant_time_size<false>>
        set_;
};

} // namespace foreman::lease
