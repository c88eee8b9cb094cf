#include "broker/worker_launch.hpp"

#include <catch2/catch.hpp>

#include <algorithm>

using namespace foreman::broker;

namespace {
PoolConfig pool(std::vector<std::string> args) {
    PoolConfig p;
    p.name = "imap";
    p.path = "/usr/lib/imap-worker";
    p.args = std::move(args);
    return p;
}
WorkerPlacement where() { return {"17", "/run/foreman/imap/17.sock", "alice", "/run/foreman/notify.sock"}; }
bool has(const std::vector<std::string>& env, const std::string& entry) {
    return std::find(env.begin(), env.end(), entry) != env.end();
}
bool has_key(const std::vector<std::string>& env, const std::string& key) {
    return std::any_of(env.begin(), env.end(), [&](auto& e) { return e.rfind(key + "=", 0) == 0; });
}
} // namespace

TEST_CASE("argv placeholders are replaced wherever they stand", "[launch]") {
    auto spec = make_launch_spec(pool({"--listen={socket}", "{protocol}-{worker}", "{user}", "{unknown}", "{"}),
                                 where(), {});
    REQUIRE(spec.argv.size() == 6);
    CHECK(spec.argv[0] == "/usr/lib/imap-worker");
    CHECK(spec.argv[1] == "--listen=/run/foreman/imap/17.sock");
    CHECK(spec.argv[2] == "imap-17");
    CHECK(spec.argv[3] == "alice");
    CHECK(spec.argv[4] == "{unknown}");
    CHECK(spec.argv[5] == "{");
}

TEST_CASE("socket activation sets LISTEN_FDS and LISTEN_FDNAMES and asks for LISTEN_PID", "[launch]") {
    auto p = pool({});
    p.listen = ListenMode::activation;
    auto spec = make_launch_spec(p, where(), {});
    CHECK(has(spec.env, "LISTEN_FDS=1"));
    CHECK(has(spec.env, "LISTEN_FDNAMES=imap"));
    CHECK(spec.set_listen_pid);
    p.listen = ListenMode::path;
    auto path = make_launch_spec(p, where(), {});
    CHECK_FALSE(has_key(path.env, "LISTEN_FDS"));
    CHECK_FALSE(path.set_listen_pid);
}

TEST_CASE("the FOREMAN_ variables name the worker, and FOREMAN_USER only for per_user pools", "[launch]") {
    auto p = pool({});
    p.limits.version = 1001;
    auto spec = make_launch_spec(p, where(), {});
    CHECK(has(spec.env, "FOREMAN_PROTOCOL=imap"));
    CHECK(has(spec.env, "FOREMAN_VERSION=1001"));
    CHECK(has(spec.env, "FOREMAN_WORKER_ID=17"));
    CHECK(has(spec.env, "FOREMAN_SOCKET=/run/foreman/imap/17.sock"));
    CHECK_FALSE(has_key(spec.env, "FOREMAN_USER"));
    p.limits.per_user = true;
    CHECK(has(make_launch_spec(p, where(), {}).env, "FOREMAN_USER=alice"));
}

TEST_CASE("NOTIFY_SOCKET with notify, WATCHDOG_USEC and WATCHDOG_PID with a heartbeat timeout", "[launch]") {
    auto p = pool({});
    auto none = make_launch_spec(p, where(), {});
    CHECK_FALSE(has_key(none.env, "NOTIFY_SOCKET"));
    p.limits.notify = foreman::lease::NotifyMode::systemd;
    auto notify = make_launch_spec(p, where(), {});
    CHECK(has(notify.env, "NOTIFY_SOCKET=/run/foreman/notify.sock"));
    CHECK_FALSE(has_key(notify.env, "WATCHDOG_USEC"));
    CHECK_FALSE(notify.set_watchdog_pid);
    p.limits.heartbeat_timeout = std::chrono::milliseconds(1500);
    auto hb = make_launch_spec(p, where(), {});
    CHECK(has(hb.env, "WATCHDOG_USEC=1500000"));
    CHECK(hb.set_watchdog_pid);
}

TEST_CASE("the broker's own activation and notify variables are not inherited", "[launch]") {
    const char* env[] = {"PATH=/usr/bin", "LISTEN_FDS=2", "LISTEN_PID=1", "NOTIFY_SOCKET=/x", "WATCHDOG_USEC=5",
                         "FOREMAN_SOCKET=/run/foreman/foreman.sock", "HOME=/root", nullptr};
    auto inherited = inheritable_environment(env);
    CHECK(inherited == std::vector<std::string>{"PATH=/usr/bin", "HOME=/root"});
    auto spec = make_launch_spec(pool({}), where(), inherited);
    CHECK(has(spec.env, "PATH=/usr/bin"));
    CHECK(std::count_if(spec.env.begin(), spec.env.end(), [](auto& e) { return e.rfind("FOREMAN_SOCKET=", 0) == 0; }) == 1);
}
