// lease/deadline_index.hpp: one ordered index of intrusive timers.

#include "lease/deadline_index.hpp"

#include <catch2/catch.hpp>

#include <memory>
#include <vector>

using namespace foreman::lease;
using namespace std::chrono_literals;

namespace {

/// Pops everything due at `now`, in order.
std::vector<Timer*> pop_all(DeadlineIndex& index, TimePoint now) {
    std::vector<Timer*> due;
    while (Timer* t = index.pop_due(now)) due.push_back(t);
    return due;
}

} // namespace

TEST_CASE("an empty index has no next deadline and nothing due", "[deadline_index]") {
    DeadlineIndex index;
    CHECK(index.size() == 0);
    CHECK_FALSE(index.next().has_value());
    CHECK(index.pop_due(TimePoint{} + 1000h) == nullptr);
}

TEST_CASE("a timer keeps its kind and owner", "[deadline_index]") {
    int owner = 0;
    Timer t(DeadlineKind::worker_idle, &owner);
    CHECK(t.kind() == DeadlineKind::worker_idle);
    CHECK(t.owner() == &owner);
    CHECK_FALSE(t.armed());
}

TEST_CASE("arming a timer makes it the next deadline", "[deadline_index]") {
    TimePoint t0{};
    DeadlineIndex index;
    Timer a(DeadlineKind::lease_ttl, nullptr);
    index.arm(a, t0 + 5s);
    CHECK(a.armed());
    CHECK(a.at() == t0 + 5s);
    CHECK(index.size() == 1);
    REQUIRE(index.next().has_value());
    CHECK(*index.next() == t0 + 5s);
}

TEST_CASE("next() is the earliest of several deadlines", "[deadline_index]") {
    TimePoint t0{};
    DeadlineIndex index;
    Timer a(DeadlineKind::lease_ttl, nullptr), b(DeadlineKind::worker_idle, nullptr),
        c(DeadlineKind::worker_kill, nullptr);
    index.arm(a, t0 + 30s);
    index.arm(b, t0 + 10s);
    index.arm(c, t0 + 20s);
    CHECK(index.size() == 3);
    CHECK(*index.next() == t0 + 10s);
}

TEST_CASE("rearming moves a timer instead of adding it twice", "[deadline_index]") {
    TimePoint t0{};
    DeadlineIndex index;
    Timer a(DeadlineKind::lease_ttl, nullptr), b(DeadlineKind::worker_idle, nullptr);
    index.arm(a, t0 + 10s);
    index.arm(b, t0 + 20s);
    index.arm(a, t0 + 30s); // a renewal pushes the ttl later
    CHECK(index.size() == 2);
    CHECK(a.at() == t0 + 30s);
    CHECK(*index.next() == t0 + 20s);
    auto due = pop_all(index, t0 + 25s);
    REQUIRE(due.size() == 1);
    CHECK(due[0] == &b);

    index.arm(a, t0 + 1s); // and earlier again
    CHECK(*index.next() == t0 + 1s);
    CHECK(index.size() == 1);
}

TEST_CASE("disarming removes a timer, and disarming an unarmed timer is harmless",
          "[deadline_index]") {
    TimePoint t0{};
    DeadlineIndex index;
    Timer a(DeadlineKind::lease_ttl, nullptr), b(DeadlineKind::worker_idle, nullptr);
    index.arm(a, t0 + 1s);
    index.arm(b, t0 + 2s);
    index.disarm(a);
    CHECK_FALSE(a.armed());
    CHECK(index.size() == 1);
    CHECK(*index.next() == t0 + 2s);
    index.disarm(a);
    CHECK(index.size() == 1);
    auto due = pop_all(index, t0 + 10s);
    REQUIRE(due.size() == 1);
    CHECK(due[0] == &b);
}

TEST_CASE("pop_due returns due timers earliest first and leaves the rest", "[deadline_index]") {
    TimePoint t0{};
    DeadlineIndex index;
    Timer a(DeadlineKind::lease_ttl, nullptr), b(DeadlineKind::worker_idle, nullptr),
        c(DeadlineKind::worker_kill, nullptr), d(DeadlineKind::pool_backoff, nullptr);
    index.arm(c, t0 + 300ms);
    index.arm(a, t0 + 100ms);
    index.arm(d, t0 + 400ms);
    index.arm(b, t0 + 200ms);

    CHECK(index.pop_due(t0 + 99ms) == nullptr);
    auto due = pop_all(index, t0 + 300ms); // a deadline equal to now is due
    REQUIRE(due.size() == 3);
    CHECK(due[0] == &a);
    CHECK(due[1] == &b);
    CHECK(due[2] == &c);
    CHECK_FALSE(a.armed());
    CHECK_FALSE(b.armed());
    CHECK_FALSE(c.armed());
    CHECK(d.armed());
    CHECK(index.size() == 1);
    CHECK(*index.next() == t0 + 400ms);
}

TEST_CASE("a popped timer can be armed again", "[deadline_index]") {
    TimePoint t0{};
    DeadlineIndex index;
    Timer a(DeadlineKind::worker_idle, nullptr);
    index.arm(a, t0 + 1s);
    REQUIRE(index.pop_due(t0 + 1s) == &a);
    index.arm(a, t0 + 2s);
    CHECK(a.armed());
    CHECK(index.pop_due(t0 + 1s) == nullptr);
    CHECK(index.pop_due(t0 + 2s) == &a);
}

TEST_CASE("equal deadlines come out in insertion order", "[deadline_index]") {
    TimePoint t0{};
    DeadlineIndex index;
    std::vector<std::unique_ptr<Timer>> timers;
    for (int i = 0; i < 8; ++i) {
        timers.push_back(std::make_unique<Timer>(DeadlineKind::request_wait, nullptr));
        index.arm(*timers.back(), t0 + 5s);
    }
    // Re-arming one at the same time puts it behind the others.
    index.arm(*timers[0], t0 + 5s);
    auto due = pop_all(index, t0 + 5s);
    REQUIRE(due.size() == 8);
    for (int i = 1; i < 8; ++i) CHECK(due[i - 1] == timers[i].get());
    CHECK(due[7] == timers[0].get());
}

TEST_CASE("a destroyed timer leaves the index", "[deadline_index]") {
    TimePoint t0{};
    DeadlineIndex index;
    Timer keep(DeadlineKind::worker_idle, nullptr);
    index.arm(keep, t0 + 2s);
    {
        Timer dropped(DeadlineKind::lease_ttl, nullptr);
        index.arm(dropped, t0 + 1s);
        CHECK(index.size() == 2);
        CHECK(*index.next() == t0 + 1s);
    }
    CHECK(index.size() == 1);
    CHECK(*index.next() == t0 + 2s);
    auto due = pop_all(index, t0 + 10s);
    REQUIRE(due.size() == 1);
    CHECK(due[0] == &keep);
}

TEST_CASE("a timer may outlive its index", "[deadline_index]") {
    TimePoint t0{};
    Timer survivor(DeadlineKind::worker_lifetime, nullptr);
    {
        DeadlineIndex index;
        index.arm(survivor, t0 + 1s);
        CHECK(survivor.armed());
    }
    CHECK_FALSE(survivor.armed());
}
