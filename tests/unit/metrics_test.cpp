// broker/metrics: the wait histogram, exit causes, end reason labels, the
// engine's lease-end and start-failure counters, and the exposition text
// (read back with a strict parser of the format).

#include "broker/metrics.hpp"
#include "lease/engine.hpp"
#include "prometheus_text.hpp"

#include <catch2/catch.hpp>

#include <csignal>
#include <stdexcept>
#include <sys/wait.h>

using namespace foreman::broker::metrics;
using foreman::protocol::EndReason;
using foreman::protocol::FailCode;
using foreman::test::parse_prometheus_text;
using foreman::test::PromText;
using namespace std::chrono_literals;

namespace {

/// A wait status as waitpid reports it.
int exited_with(int code) { return (code & 0xff) << 8; }
int killed_by(int sig) { return sig; }

PoolSample sample(const std::string& name) {
    PoolSample p;
    p.name = name;
    return p;
}

std::size_t reason(EndReason r) { return static_cast<std::size_t>(r); }

} // namespace

TEST_CASE("the wait histogram puts a wait in the first bucket whose bound it does not exceed") {
    WaitHistogram h;
    h.observe(0ns);
    h.observe(50us); // on the bound: le is "less than or equal"
    h.observe(50us + 1ns);
    h.observe(10s);
    h.observe(11s);
    CHECK(h.bucket(0) == 2);
    CHECK(h.bucket(1) == 1);
    CHECK(h.bucket(lease_wait_bounds.size() - 1) == 1);
    CHECK(h.bucket(lease_wait_bounds.size()) == 1); // above 10 s: only +Inf
    CHECK(h.count() == 5);
    CHECK(h.sum() == 50us + 50us + 1ns + 10s + 11s);
}

TEST_CASE("the lease wait buckets run from 50 us to 10 s in ascending order") {
    CHECK(lease_wait_bounds.front() == 50us);
    CHECK(lease_wait_bounds.back() == 10s);
    for (std::size_t i = 1; i < lease_wait_bounds.size(); ++i) CHECK(lease_wait_bounds[i - 1] < lease_wait_bounds[i]);
}

TEST_CASE("a worker's exit cause says who ended it") {
    CHECK(exit_cause(exited_with(0), 0) == ExitCause::exited);
    CHECK(exit_cause(exited_with(3), 0) == ExitCause::exited);
    CHECK(exit_cause(killed_by(SIGSEGV), 0) == ExitCause::crashed);
    CHECK(exit_cause(killed_by(SIGKILL), 0) == ExitCause::crashed); // the OOM killer, an operator: not us
    CHECK(exit_cause(killed_by(SIGTERM), 0) == ExitCause::crashed);
    CHECK(exit_cause(exited_with(0), SIGTERM) == ExitCause::retired);
    CHECK(exit_cause(killed_by(SIGTERM), SIGTERM) == ExitCause::retired);
    CHECK(exit_cause(killed_by(SIGABRT), SIGTERM) == ExitCause::crashed);
    CHECK(exit_cause(killed_by(SIGKILL), SIGKILL) == ExitCause::killed);
    CHECK(exit_cause(killed_by(SIGTERM), SIGKILL) == ExitCause::retired); // SIGTERM won the race
    CHECK(exit_cause(exited_with(0), SIGKILL) == ExitCause::retired);
    CHECK(to_string(ExitCause::retired) == "retired");
    CHECK(to_string(ExitCause::killed) == "killed");
    CHECK(to_string(ExitCause::crashed) == "crashed");
    CHECK(to_string(ExitCause::exited) == "exited");
}

TEST_CASE("lease end reasons are labelled as EXPIRED spells them, plus release and disconnect") {
    CHECK(end_reason_label(EndReason::released) == "release");
    CHECK(end_reason_label(EndReason::holder_closed) == "disconnect");
    CHECK(end_reason_label(EndReason::ttl) == "ttl");
    CHECK(end_reason_label(EndReason::worker_ready) == "worker-ready");
    CHECK(end_reason_label(EndReason::worker_exit) == "worker-exit");
    CHECK(end_reason_label(EndReason::processtime) == "processtime");
    CHECK(end_reason_label(EndReason::shutdown) == "shutdown");
}

TEST_CASE("the engine counts ended leases by reason and failed starts") {
    using namespace foreman::lease;
    Engine engine(EngineOptions{16, 1});
    TimePoint t{};
    Decisions out;
    PoolLimits limits;
    limits.min_idle = 1;
    limits.max_instances = 1;
    limits.recycle_jitter_pct = 0;
    REQUIRE(engine.add_pool(t, "echo", limits, out) == PoolChange::ok);
    auto spawned = [&] {
        for (auto& d : out)
            if (auto* s = std::get_if<Spawn>(&d)) return s->worker;
        FAIL("no Spawn decision");
        return WorkerId{0};
    };
    auto granted = [&] {
        for (auto& d : out)
            if (auto* g = std::get_if<Grant>(&d)) return g->lease;
        FAIL("no Grant decision");
        return LeaseId{0};
    };
    WorkerId w = spawned();
    out.clear();
    engine.worker_started(t, w, 4242, out);
    engine.worker_ready(t, w, out);
    Ticket ticket = 1;
    auto lease = [&](ClientId client) {
        out.clear();
        engine.request_lease(t, LeaseRequest{ticket++, client, 1000, "echo", {}, 1s, std::nullopt, std::nullopt,
                                             false},
                             out);
        return granted();
    };

    LeaseId a = lease(1);
    REQUIRE(engine.release(t, a, 1, 1000, out));
    lease(1);
    t += 2s; // past the 1 s ttl
    engine.expire(t, out);
    lease(2);
    engine.client_closed(t, 2, out);
    out.clear();

    auto pool = engine.snapshot(t).pools.at(0);
    CHECK(pool.leases_ended[reason(EndReason::released)] == 1);
    CHECK(pool.leases_ended[reason(EndReason::ttl)] == 1);
    CHECK(pool.leases_ended[reason(EndReason::holder_closed)] == 1);
    CHECK(pool.leases_ended[reason(EndReason::worker_exit)] == 0);
    CHECK(pool.start_failures_total == 0);

    // The worker dies; its replacement cannot be started.
    engine.worker_exited(t, w, out);
    WorkerId next = spawned();
    out.clear();
    engine.spawn_failed(t, next, "exec: no such file", out);
    pool = engine.snapshot(t).pools.at(0);
    CHECK(pool.start_failures_total == 1);
    CHECK(pool.spawn_failures == 1);
}

TEST_CASE("pool views of the same name add up in one sample") {
    foreman::lease::PoolView draining{};
    draining.protocol = "echo";
    draining.queued = 0;
    draining.leases_ended[reason(EndReason::released)] = 3;
    draining.start_failures_total = 1;
    foreman::lease::WorkerView leased{};
    leased.state = foreman::lease::WorkerState::leased;
    draining.workers.push_back(leased);
    foreman::lease::PoolView live = draining;
    live.queued = 2;
    live.workers.back().state = foreman::lease::WorkerState::finishing; // shown as starting

    PoolSample s;
    add_pool_view(s, draining);
    add_pool_view(s, live);
    CHECK(s.leases_ended[reason(EndReason::released)] == 6);
    CHECK(s.start_failures == 2);
    CHECK(s.queued == 2);
    CHECK(s.workers[static_cast<std::size_t>(ShownState::leased)] == 1);
    CHECK(s.workers[static_cast<std::size_t>(ShownState::starting)] == 1);
}

TEST_CASE("the exposition has HELP and TYPE for every family and the figures given") {
    Scrape scrape;
    PoolSample echo = sample("echo");
    echo.counters.leases_granted = 7;
    echo.counters.spawns = 3;
    echo.counters.exits[static_cast<std::size_t>(ExitCause::crashed)] = 2;
    echo.counters.rejections[static_cast<std::size_t>(FailCode::busy)] = 4;
    echo.counters.lease_wait.observe(10us);
    echo.counters.lease_wait.observe(3ms);
    echo.counters.lease_wait.observe(20s);
    echo.leases_ended[reason(EndReason::holder_closed)] = 5;
    echo.start_failures = 1;
    echo.workers = {1, 2, 3, 4};
    echo.queued = 6;
    scrape.pools.push_back(echo);
    scrape.pools.push_back(sample("other"));
    scrape.unknown_pool.rejections[static_cast<std::size_t>(FailCode::unknown_protocol)] = 9;
    scrape.control_connections = 11;
    scrape.max_workers = 256;
    scrape.start_time_seconds = 1700000000.5;

    const std::string text = render(scrape);
    INFO(text);
    const PromText m = parse_prometheus_text(text);

    const std::vector<std::pair<std::string, std::string>> families{
        {"foreman_leases_granted_total", "counter"},   {"foreman_leases_ended_total", "counter"},
        {"foreman_lease_wait_seconds", "histogram"},   {"foreman_lease_rejections_total", "counter"},
        {"foreman_workers", "gauge"},                  {"foreman_queue_length", "gauge"},
        {"foreman_spawns_total", "counter"},           {"foreman_spawn_failures_total", "counter"},
        {"foreman_worker_exits_total", "counter"},     {"foreman_control_connections", "gauge"},
        {"foreman_max_workers", "gauge"},              {"foreman_start_time_seconds", "gauge"}};
    REQUIRE(m.families.size() == families.size());
    for (const auto& [name, type] : families) {
        const auto* f = m.family(name);
        REQUIRE(f);
        CHECK(f->type == type);
        CHECK_FALSE(f->help.empty());
    }

    CHECK(m.value("foreman_leases_granted_total", {{"pool", "echo"}}) == 7);
    CHECK(m.value("foreman_leases_granted_total", {{"pool", "other"}}) == 0);
    CHECK(m.value("foreman_leases_ended_total", {{"pool", "echo"}, {"reason", "disconnect"}}) == 5);
    CHECK(m.value("foreman_leases_ended_total", {{"pool", "echo"}, {"reason", "release"}}) == 0);
    for (const char* r : {"release", "ttl", "worker-ready", "worker-exit", "processtime", "shutdown", "disconnect"})
        CHECK(m.value("foreman_leases_ended_total", {{"pool", "other"}, {"reason", r}}) == 0);
    CHECK(m.value("foreman_lease_wait_seconds_bucket", {{"pool", "echo"}, {"le", "0.00005"}}) == 1);
    CHECK(m.value("foreman_lease_wait_seconds_bucket", {{"pool", "echo"}, {"le", "0.005"}}) == 2);
    CHECK(m.value("foreman_lease_wait_seconds_bucket", {{"pool", "echo"}, {"le", "10"}}) == 2);
    CHECK(m.value("foreman_lease_wait_seconds_bucket", {{"pool", "echo"}, {"le", "+Inf"}}) == 3);
    CHECK(m.value("foreman_lease_wait_seconds_count", {{"pool", "echo"}}) == 3);
    CHECK(m.value("foreman_lease_wait_seconds_sum", {{"pool", "echo"}}).value() == Approx(20.00301));
    CHECK(m.value("foreman_lease_rejections_total", {{"pool", "echo"}, {"code", "busy"}}) == 4);
    CHECK_FALSE(m.value("foreman_lease_rejections_total", {{"pool", "echo"}, {"code", "overloaded"}}));
    CHECK(m.value("foreman_lease_rejections_total", {{"pool", ""}, {"code", "unknown-protocol"}}) == 9);
    CHECK(m.value("foreman_workers", {{"pool", "echo"}, {"state", "starting"}}) == 1);
    CHECK(m.value("foreman_workers", {{"pool", "echo"}, {"state", "idle"}}) == 2);
    CHECK(m.value("foreman_workers", {{"pool", "echo"}, {"state", "leased"}}) == 3);
    CHECK(m.value("foreman_workers", {{"pool", "echo"}, {"state", "stopping"}}) == 4);
    CHECK(m.value("foreman_queue_length", {{"pool", "echo"}}) == 6);
    CHECK(m.value("foreman_spawns_total", {{"pool", "echo"}}) == 3);
    CHECK(m.value("foreman_spawn_failures_total", {{"pool", "echo"}}) == 1);
    CHECK(m.value("foreman_worker_exits_total", {{"pool", "echo"}, {"cause", "crashed"}}) == 2);
    CHECK(m.value("foreman_worker_exits_total", {{"pool", "echo"}, {"cause", "retired"}}) == 0);
    CHECK(m.value("foreman_control_connections") == 11);
    CHECK(m.value("foreman_max_workers") == 256);
    CHECK(m.value("foreman_start_time_seconds") == 1700000000.5);
}

TEST_CASE("label values and help text are escaped") {
    Scrape scrape;
    scrape.pools.push_back(sample("a\"b\\c\nd"));
    const std::string text = render(scrape);
    CHECK(text.find("foreman_queue_length{pool=\"a\\\"b\\\\c\\nd\"} 0\n") != std::string::npos);
    const PromText m = parse_prometheus_text(text);
    CHECK(m.value("foreman_queue_length", {{"pool", "a\"b\\c\nd"}}) == 0);
}

TEST_CASE("an exposition with no pool still declares every family") {
    const PromText m = parse_prometheus_text(render(Scrape{}));
    CHECK(m.families.size() == 12);
    CHECK(m.family("foreman_workers")->samples.empty());
    CHECK(m.value("foreman_control_connections") == 0);
}

TEST_CASE("the test parser refuses what a scraper would") {
    auto refuses = [](const std::string& text) {
        INFO(text);
        CHECK_THROWS_AS(parse_prometheus_text(text), std::runtime_error);
    };
    refuses("x_total 1\n");                                          // no HELP/TYPE
    refuses("# HELP x_total h\n# TYPE x_total counter\nx_total 1");  // no final newline
    refuses("# HELP x_total h\n# TYPE x_total counter\nx_total{a=\"1\"} 1\nx_total{a=\"1\"} 2\n"); // twice
    refuses("# HELP x h\n# TYPE x counter\nx 1\n");                  // counter without _total
    refuses("# HELP x h\n# TYPE x gauge\nx{a=\"\\t\"} 1\n");         // bad escape
    refuses("# HELP x h\n# TYPE x gauge\nx{1a=\"\"} 1\n");           // bad label name
    refuses("# HELP x h\n# TYPE x gauge\nx one\n");                  // bad value
    refuses("# HELP h h\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\n"
            "h_sum 1\nh_count 1\n"); // not cumulative
    refuses("# HELP h h\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\n"
            "h_sum 1\nh_count 3\n"); // +Inf != _count
    refuses("# HELP h h\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n"); // no +Inf
    CHECK_NOTHROW(parse_prometheus_text("# HELP h h\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\n"
                                        "h_bucket{le=\"+Inf\"} 2\nh_sum 1.5\nh_count 2\n"));
}
