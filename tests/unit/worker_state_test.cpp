// The worker state × event table of lease/worker_state.cpp, checked pair by
// pair against the table as docs/lease-engine.md describes it.

#include "lease/worker_state.hpp"

#include <catch2/catch.hpp>

#include <array>
#include <set>
#include <string>

using namespace foreman::lease;

namespace {

using S = WorkerState;
using E = WorkerEvent;

constexpr std::array all_states{S::starting, S::idle, S::leased, S::finishing, S::stopping, S::gone};
constexpr std::array all_events{E::ready,     E::granted, E::lease_ended, E::lease_ended_owes_ready,
                                E::heartbeat, E::retire,  E::grace_over,  E::exited};

bool moves_to(S state, E event, S next) {
    const Transition t = transition(state, event);
    return t.effect == Effect::move && t.next == next;
}
bool ignored(S state, E event) { return transition(state, event).effect == Effect::ignore; }
bool impossible(S state, E event) { return transition(state, event).effect == Effect::impossible; }

/// The expected table, written out independently of lease/worker_state.cpp.
struct Expected {
    S state;
    E event;
    Effect effect;
    S next; ///< only meaningful for Effect::move
};

constexpr Effect M = Effect::move;
constexpr Effect I = Effect::ignore;
constexpr Effect X = Effect::impossible;

// clang-format off
constexpr std::array<Expected, worker_state_count * worker_event_count> expected{{
    {S::starting, E::ready, M, S::idle},
    {S::starting, E::granted, X, S::gone},
    {S::starting, E::lease_ended, X, S::gone},
    {S::starting, E::lease_ended_owes_ready, X, S::gone},
    {S::starting, E::heartbeat, I, S::gone},
    {S::starting, E::retire, M, S::stopping},
    {S::starting, E::grace_over, X, S::gone},
    {S::starting, E::exited, M, S::gone},

    {S::idle, E::ready, I, S::gone},
    {S::idle, E::granted, M, S::leased},
    {S::idle, E::lease_ended, X, S::gone},
    {S::idle, E::lease_ended_owes_ready, X, S::gone},
    {S::idle, E::heartbeat, I, S::gone},
    {S::idle, E::retire, M, S::stopping},
    {S::idle, E::grace_over, X, S::gone},
    {S::idle, E::exited, M, S::gone},

    {S::leased, E::ready, M, S::idle},
    {S::leased, E::granted, X, S::gone},
    {S::leased, E::lease_ended, M, S::idle},
    {S::leased, E::lease_ended_owes_ready, M, S::finishing},
    {S::leased, E::heartbeat, I, S::gone},
    {S::leased, E::retire, M, S::stopping},
    {S::leased, E::grace_over, X, S::gone},
    {S::leased, E::exited, M, S::gone},

    {S::finishing, E::ready, M, S::idle},
    {S::finishing, E::granted, X, S::gone},
    {S::finishing, E::lease_ended, X, S::gone},
    {S::finishing, E::lease_ended_owes_ready, X, S::gone},
    {S::finishing, E::heartbeat, I, S::gone},
    {S::finishing, E::retire, M, S::stopping},
    {S::finishing, E::grace_over, X, S::gone},
    {S::finishing, E::exited, M, S::gone},

    {S::stopping, E::ready, I, S::gone},
    {S::stopping, E::granted, X, S::gone},
    {S::stopping, E::lease_ended, X, S::gone},
    {S::stopping, E::lease_ended_owes_ready, X, S::gone},
    {S::stopping, E::heartbeat, I, S::gone},
    {S::stopping, E::retire, I, S::gone},
    {S::stopping, E::grace_over, M, S::stopping},
    {S::stopping, E::exited, M, S::gone},

    {S::gone, E::ready, X, S::gone},
    {S::gone, E::granted, X, S::gone},
    {S::gone, E::lease_ended, X, S::gone},
    {S::gone, E::lease_ended_owes_ready, X, S::gone},
    {S::gone, E::heartbeat, X, S::gone},
    {S::gone, E::retire, X, S::gone},
    {S::gone, E::grace_over, X, S::gone},
    {S::gone, E::exited, X, S::gone},
}};
// clang-format on

} // namespace

TEST_CASE("every state x event pair matches the documented table", "[worker_state]") {
    std::set<std::pair<int, int>> seen;
    for (const Expected& e : expected) {
        seen.insert({static_cast<int>(e.state), static_cast<int>(e.event)});
        INFO(std::string(to_string(e.state)) + " x " + std::string(to_string(e.event)));
        const Transition t = transition(e.state, e.event);
        CHECK(t.effect == e.effect);
        if (e.effect == Effect::move) CHECK(to_string(t.next) == to_string(e.next));
    }
    // The expected table above covers every pair exactly once.
    CHECK(seen.size() == static_cast<std::size_t>(worker_state_count * worker_event_count));
    CHECK(all_states.size() == static_cast<std::size_t>(worker_state_count));
    CHECK(all_events.size() == static_cast<std::size_t>(worker_event_count));
}

TEST_CASE("a starting worker becomes idle on ready", "[worker_state]") {
    CHECK(moves_to(S::starting, E::ready, S::idle));
}

TEST_CASE("a starting worker cannot be granted a lease", "[worker_state]") {
    CHECK(impossible(S::starting, E::granted));
}

TEST_CASE("an idle worker is leased when granted", "[worker_state]") {
    CHECK(moves_to(S::idle, E::granted, S::leased));
}

TEST_CASE("a leased worker cannot be granted again", "[worker_state]") {
    CHECK(impossible(S::leased, E::granted));
}

TEST_CASE("only an idle worker can be granted a lease", "[worker_state]") {
    for (S s : all_states) {
        INFO(to_string(s));
        if (s == S::idle)
            CHECK(transition(s, E::granted).effect == Effect::move);
        else
            CHECK(impossible(s, E::granted));
    }
}

TEST_CASE("a lease can end only on a leased worker", "[worker_state]") {
    for (S s : all_states) {
        INFO(to_string(s));
        if (s == S::leased) {
            CHECK(moves_to(s, E::lease_ended, S::idle));
            CHECK(moves_to(s, E::lease_ended_owes_ready, S::finishing));
        } else {
            CHECK(impossible(s, E::lease_ended));
            CHECK(impossible(s, E::lease_ended_owes_ready));
        }
    }
}

TEST_CASE("READY=1 while leased makes the worker idle (notify=foreman ends the lease)",
          "[worker_state]") {
    CHECK(moves_to(S::leased, E::ready, S::idle));
}

TEST_CASE("a finishing worker becomes idle on READY=1 and cannot be granted before",
          "[worker_state]") {
    CHECK(moves_to(S::finishing, E::ready, S::idle));
    CHECK(impossible(S::finishing, E::granted));
}

TEST_CASE("a ready idle worker ignores a further READY=1", "[worker_state]") {
    CHECK(ignored(S::idle, E::ready));
}

TEST_CASE("a stopping worker ignores heartbeats and READY=1", "[worker_state]") {
    CHECK(ignored(S::stopping, E::heartbeat));
    CHECK(ignored(S::stopping, E::ready));
}

TEST_CASE("heartbeats never change the state of a live worker", "[worker_state]") {
    for (S s : all_states) {
        if (s == S::gone) continue;
        INFO(to_string(s));
        CHECK(ignored(s, E::heartbeat));
    }
}

TEST_CASE("every live state can be retired, and retiring twice is harmless", "[worker_state]") {
    for (S s : {S::starting, S::idle, S::leased, S::finishing}) {
        INFO(to_string(s));
        CHECK(moves_to(s, E::retire, S::stopping));
    }
    CHECK(ignored(S::stopping, E::retire));
}

TEST_CASE("the kill grace ends only for a stopping worker, which stays stopping",
          "[worker_state]") {
    for (S s : all_states) {
        INFO(to_string(s));
        if (s == S::stopping)
            CHECK(moves_to(s, E::grace_over, S::stopping));
        else
            CHECK(impossible(s, E::grace_over));
    }
}

TEST_CASE("every state can exit", "[worker_state]") {
    for (S s : all_states) {
        if (s == S::gone) continue;
        INFO(to_string(s));
        CHECK(moves_to(s, E::exited, S::gone));
    }
}

TEST_CASE("a gone worker takes no event", "[worker_state]") {
    for (E e : all_events) {
        INFO(to_string(e));
        CHECK(impossible(S::gone, e));
    }
}

TEST_CASE("STATUS shows finishing as starting and never shows gone", "[worker_state]") {
    CHECK(public_name(S::starting) == "starting");
    CHECK(public_name(S::idle) == "idle");
    CHECK(public_name(S::leased) == "leased");
    CHECK(public_name(S::finishing) == "starting");
    CHECK(public_name(S::stopping) == "stopping");
    for (S s : all_states) {
        const auto name = public_name(s);
        CHECK((name == "starting" || name == "idle" || name == "leased" || name == "stopping"));
    }
}

TEST_CASE("every state and event has a distinct name", "[worker_state]") {
    std::set<std::string> states, events;
    for (S s : all_states) states.insert(std::string(to_string(s)));
    for (E e : all_events) events.insert(std::string(to_string(e)));
    CHECK(states.size() == all_states.size());
    CHECK(events.size() == all_events.size());
    CHECK(states.count("?") == 0);
    CHECK(events.count("?") == 0);
    CHECK(to_string(S::finishing) == "finishing");
    CHECK(to_string(E::lease_ended_owes_ready) == "lease_ended_owes_ready");
}
