// Many clients at once: 64 threads, each with its own connection, lease,
// renew, use and release workers of three pools concurrently. Under
// ThreadSanitizer (scripts/test.sh tsan) this is the broker's race detector.

#include "broker_harness.hpp"
#include "client/connection.hpp"

#include <catch2/catch.hpp>

#include <boost/json.hpp>

#include <atomic>
#include <mutex>
#include <thread>
#include <unistd.h>

using namespace foreman;
using namespace foreman::test;
using client::Connection;
using client::Error;
using lease::WorkerState;
using protocol::FailCode;

namespace {


constexpr int clients = 64;
constexpr int iterations = 50;

struct PoolSpec {
    const char* name;
    bool notify_foreman; ///< the lease may end by worker-ready before RELEASE
};
constexpr PoolSpec pools[] = {{"alpha", false}, {"beta", true}, {"gamma", false}};

/// One client's loop; returns how many iterations went through. Failures
/// are kept in `errors` (Catch's assertions are not thread-safe).
int run_client(const std::string& socket, int index, std::mutex& mu, std::vector<std::string>& errors) {
    auto note = [&](const std::string& what) {
        std::lock_guard lock(mu);
        errors.push_back("client " + std::to_string(index) + ": " + what);
    };
    int done = 0;
    try {
        auto c = Connection::connect(socket);
        for (int i = 0; i < iterations; ++i) {
            const PoolSpec& pool = pools[(index + i) % 3];
            client::LeaseOptions options;
            options.user = "u" + std::to_string(index % 5);
            options.wait_ms = 60000;
            auto l = c.lease(pool.name, options);
            if (l.renew().count() <= 0) {
                note("renew gave no ttl");
                continue;
            }
            std::string mark = "c" + std::to_string(index) + "i" + std::to_string(i) + "\n";
            if (::write(l.fd(), mark.data(), mark.size()) != static_cast<ssize_t>(mark.size())) {
                note("write to the worker failed");
                continue;
            }
            std::string back;
            char buf[256];
            while (back.size() < mark.size()) {
                ssize_t n = ::read(l.fd(), buf, sizeof buf);
                if (n <= 0) break;
                back.append(buf, static_cast<std::size_t>(n));
            }
            if (back != mark) {
                note("echo gave '" + back + "' for '" + mark + "'");
                continue;
            }
            if (pool.notify_foreman && i % 2 == 0) {
                // Close first: the worker's READY=1 may end the lease
                // (worker-ready) before the RELEASE arrives.
                l.take_fd().reset();
                try {
                    l.release();
                } catch (const Error& e) {
                    if (!e.is(FailCode::no_such_lease)) throw;
                }
            } else {
                l.release();
            }
            ++done;
        }
        for (auto& e : c.take_expired())
            if (e.reason != protocol::EndReason::worker_ready)
                note("lease " + std::to_string(e.lease_id) + " expired: " + std::string(protocol::to_string(e.reason)));
    } catch (const std::exception& e) {
        note(e.what());
    }
    return done;
}

} // namespace

TEST_CASE("64 clients lease, renew and release concurrently across several pools", "[stress]") {
    BrokerHarness h(R"(
[pool.alpha]
path = )" + echo_worker() + R"(
notify = none
min_idle = 2
max_instances = 6
[pool.beta]
path = )" + echo_worker() + R"(
notify = foreman
min_idle = 4
max_instances = 6
[pool.gamma]
path = )" + echo_worker() + R"(
notify = foreman
min_idle = 3
max_instances = 5
)");
    REQUIRE(h.wait_for([](auto& s) {
        return count_state(s, "alpha", WorkerState::idle) == 2 && count_state(s, "beta", WorkerState::idle) == 4 &&
               count_state(s, "gamma", WorkerState::idle) == 3;
    }));
    const std::string socket = h.runtime_dir() + "/foreman.sock";

    std::mutex mu;
    std::vector<std::string> errors;
    std::atomic<int> total{0};
    std::vector<std::thread> threads;
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < clients; ++i)
        threads.emplace_back([&, i] { total += run_client(socket, i, mu, errors); });
    for (auto& t : threads) t.join();
    auto took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0);
    INFO("took " << took.count() << " ms");
    for (auto& e : errors) UNSCOPED_INFO(e);
    CHECK(errors.empty());
    CHECK(total == clients * iterations);

    // Every lease ended, every worker is back (notify=foreman ones after their READY=1).
    REQUIRE(h.wait_for([](auto& s) {
        for (auto& p : s.pools)
            for (auto& w : p.workers)
                if (w.state != WorkerState::idle) return false;
        return true;
    }));
    auto status = Connection::connect(socket).status();
    INFO(boost::json::serialize(status));
    CHECK(status.at("shutting_down").as_bool() == false);
    std::uint64_t granted = 0;
    for (auto& p : status.at("pools").as_array()) {
        CHECK(p.at("queued").to_number<std::int64_t>() == 0);
        CHECK(p.at("spawn_failures").to_number<std::int64_t>() == 0);
        granted += p.at("leases_granted").to_number<std::uint64_t>();
        for (auto& w : p.at("workers").as_array()) {
            CHECK(w.at("state").as_string() == "idle");
            CHECK_FALSE(w.as_object().contains("lease"));
        }
    }
    CHECK(granted == static_cast<std::uint64_t>(clients * iterations));
    // Still serving.
    auto c = Connection::connect(socket);
    client::LeaseOptions options;
    options.wait_ms = 5000;
    auto l = c.lease("alpha", options);
    CHECK(l.worker_pid() > 0);
}
