// The broker's configuration: defaults, the file, the command line, and every
// way a configuration is refused (docs/configuration.md).

#include "broker/config.hpp"

#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <sys/stat.h>

using foreman::broker::Config;
using foreman::broker::ConfigError;
using foreman::broker::Environment;
using foreman::broker::ListenMode;
using foreman::broker::PoolConfig;
using foreman::lease::NotifyMode;
using foreman::lease::PoolLimits;
using namespace std::chrono_literals;
using namespace std::string_literals;
namespace fs = std::filesystem;

namespace {

/// A fresh directory per test, removed with everything in it.
class TempDir {
public:
    TempDir() {
        std::string pattern = (fs::temp_directory_path() / "foreman-config-test-XXXXXX").string();
        if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
        path_ = pattern;
    }
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(path_, ec);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;

    const std::string& path() const { return path_; }

    /// Writes `text` to `name` (below path()) with `mode`; returns its path.
    std::string write(const std::string& name, const std::string& text,
                      fs::perms mode = fs::perms(0644)) const {
        const fs::path file = fs::path(path_) / name;
        fs::create_directories(file.parent_path());
        std::ofstream(file) << text;
        fs::permissions(file, mode);
        return file.string();
    }

private:
    std::string path_;
};

/// A temporary directory with an executable "echo-worker" in bin/, which is
/// the whole PATH of the environment the tests load with.
struct Fixture {
    TempDir dir;
    Environment env;
    std::string worker; ///< absolute path of bin/echo-worker

    Fixture() {
        worker = dir.write("bin/echo-worker", "#!/bin/sh\nexit 0\n", fs::perms(0755));
        env.xdg_runtime_dir = std::nullopt;
        env.path = dir.path() + "/bin";
        env.uid = 0;
        env.hardware_threads = 3;
        env.working_dir = dir.path();
    }

    std::string config_file() const { return dir.path() + "/foreman.conf"; }

    Config load(const std::string& text, const std::vector<std::string>& overrides = {}) const {
        dir.write("foreman.conf", text);
        return foreman::broker::load_config(config_file(), overrides, env);
    }

    ConfigError load_error(const std::string& text, const std::vector<std::string>& overrides = {}) const {
        try {
            load(text, overrides);
        } catch (const ConfigError& e) {
            return e;
        }
        FAIL("the configuration was accepted:\n" << text);
        throw std::logic_error("unreachable");
    }

    /// The one pool of a config holding `[pool.echo]`, path and `keys`.
    PoolConfig echo_pool(const std::string& keys) const {
        const Config config = load("[pool.echo]\npath = echo-worker\n" + keys);
        REQUIRE(config.pools.size() == 1);
        return config.pools.front();
    }

    ConfigError echo_pool_error(const std::string& keys) const {
        return load_error("[pool.echo]\npath = echo-worker\n" + keys);
    }

    PoolConfig register_pool(const std::string& name,
                             const std::vector<std::pair<std::string, std::string>>& keys) const {
        return foreman::broker::parse_pool(name, keys, env);
    }

    ConfigError register_error(const std::string& name,
                               const std::vector<std::pair<std::string, std::string>>& keys) const {
        try {
            register_pool(name, keys);
        } catch (const ConfigError& e) {
            return e;
        }
        FAIL("the pool was accepted");
        throw std::logic_error("unreachable");
    }
};

} // namespace

// ---- defaults ------------------------------------------------------------------------

TEST_CASE("an empty config file gives every global its default") {
    Fixture f;
    f.env.uid = 1234;
    const Config config = f.load("");
    const auto& g = config.global;
    CHECK(g.runtime_dir == "/tmp/foreman-1234");
    CHECK(g.control_socket == "/tmp/foreman-1234/foreman.sock");
    CHECK(g.control_socket_mode == 0660);
    CHECK(g.threads == 3);
    CHECK(g.max_workers == 256);
    CHECK(g.max_clients == 4096);
    CHECK(g.shutdown_grace == 10000ms);
    CHECK(g.metrics_listen.empty());
    CHECK(config.pools.empty());
}

TEST_CASE("runtime_dir defaults to XDG_RUNTIME_DIR, then /run/foreman for root") {
    Fixture f;
    f.env.xdg_runtime_dir = "/run/user/1000";
    CHECK(f.load("").global.runtime_dir == "/run/user/1000/foreman");
    CHECK(f.load("").global.control_socket == "/run/user/1000/foreman/foreman.sock");
    f.env.xdg_runtime_dir = std::nullopt;
    f.env.uid = 0;
    CHECK(f.load("").global.runtime_dir == "/run/foreman");
}

TEST_CASE("control_socket follows a runtime_dir given without it") {
    Fixture f;
    CHECK(f.load("runtime_dir = /srv/run\n").global.control_socket == "/srv/run/foreman.sock");
    CHECK(f.load("runtime_dir = /srv/run\ncontrol_socket = /srv/ctl.sock\n").global.control_socket ==
          "/srv/ctl.sock");
}

TEST_CASE("threads defaults to at least one even when the core count is unknown") {
    Fixture f;
    f.env.hardware_threads = 0;
    CHECK(f.load("").global.threads == 1);
}

TEST_CASE("a pool with only a path gets every pool default") {
    Fixture f;
    const PoolConfig p = f.echo_pool("");
    CHECK(p.name == "echo");
    CHECK(p.path == f.worker);
    CHECK(p.args.empty());
    CHECK(p.listen == ListenMode::activation);
    CHECK(p.run_as.empty());
    CHECK(p.allow_users.empty());
    CHECK(p.allow_uids.empty());
    CHECK_FALSE(p.allow_root);
    CHECK(p.limits == PoolLimits{});
    // PROTOCOL.md's defaults, spelled out so that a changed struct default shows here.
    CHECK(p.limits.version == 1000);
    CHECK(p.limits.max_instances == 0);
    CHECK(p.limits.max_requests == 0);
    CHECK(p.limits.max_idletime == 0s);
    CHECK(p.limits.max_processtime == 0s);
    CHECK(p.limits.max_lifetime == 0s);
    CHECK(p.limits.min_idle == 0);
    CHECK(p.limits.notify == NotifyMode::none);
    CHECK(p.limits.lease_ttl == 30000ms);
    CHECK(p.limits.heartbeat_timeout == 0ms);
    CHECK(p.limits.start_timeout == 10000ms);
    CHECK(p.limits.kill_grace == 2000ms);
    CHECK(p.limits.queue_timeout == 5000ms);
    CHECK(p.limits.max_queue == 1024);
    CHECK_FALSE(p.limits.per_user);
    CHECK(p.limits.max_instances_per_user == 1);
    CHECK(p.limits.max_leases_per_user == 0);
    CHECK(p.limits.recycle_jitter_pct == 10);
}

// ---- reading every key ----------------------------------------------------------------

TEST_CASE("every global key is read from the file") {
    Fixture f;
    const Config config = f.load("# the broker\n"
                                 "runtime_dir = /var/run/fm\n"
                                 "control_socket = /var/run/fm.sock\n"
                                 "control_socket_mode = 0600\n"
                                 "threads = 7\n"
                                 "max_workers = 12\n"
                                 "max_clients = 34\n"
                                 "shutdown_grace_ms = 0\n"
                                 "metrics_listen = 127.0.0.1:9100\n");
    const auto& g = config.global;
    CHECK(g.runtime_dir == "/var/run/fm");
    CHECK(g.control_socket == "/var/run/fm.sock");
    CHECK(g.control_socket_mode == 0600);
    CHECK(g.threads == 7);
    CHECK(g.max_workers == 12);
    CHECK(g.max_clients == 34);
    CHECK(g.shutdown_grace == 0ms);
    CHECK(g.metrics_listen == "127.0.0.1:9100");
}

TEST_CASE("every pool key is read from the file") {
    Fixture f;
    const PoolConfig p = f.echo_pool("args = --greeting 'hello world' {socket}\n"
                                     "version = 1001\n"
                                     "max_instances = 8\n"
                                     "max_requests = 18446744073709551615\n"
                                     "max_idletime_secs = 60\n"
                                     "max_processtime_secs = 120\n"
                                     "max_lifetime_secs = 3600\n"
                                     "min_idle = 0\n"
                                     "listen = path\n"
                                     "notify = foreman\n"
                                     "lease_ttl_ms = 100\n"
                                     "heartbeat_timeout_ms = 500\n"
                                     "start_timeout_ms = 1\n"
                                     "kill_grace_ms = 0\n"
                                     "queue_timeout_ms = 0\n"
                                     "max_queue = 0\n"
                                     "per_user = yes\n"
                                     "max_instances_per_user = 2\n"
                                     "run_as = {user}\n"
                                     "allow_users = root, 4321\n"
                                     "allow_root = yes\n"
                                     "max_leases_per_user = 5\n"
                                     "recycle_jitter_pct = 100\n");
    CHECK(p.args == std::vector<std::string>{"--greeting", "hello world", "{socket}"});
    CHECK(p.listen == ListenMode::path);
    CHECK(p.run_as == "{user}");
    CHECK(p.allow_users == std::vector<std::string>{"root", "4321"});
    CHECK(p.allow_uids == std::vector<uid_t>{0, 4321});
    CHECK(p.allow_root);
    const auto& l = p.limits;
    CHECK(l.version == 1001);
    CHECK(l.max_instances == 8);
    CHECK(l.max_requests == 18446744073709551615u);
    CHECK(l.max_idletime == 60s);
    CHECK(l.max_processtime == 120s);
    CHECK(l.max_lifetime == 3600s);
    CHECK(l.min_idle == 0);
    CHECK(l.notify == NotifyMode::foreman);
    CHECK(l.lease_ttl == 100ms);
    CHECK(l.heartbeat_timeout == 500ms);
    CHECK(l.start_timeout == 1ms);
    CHECK(l.kill_grace == 0ms);
    CHECK(l.queue_timeout == 0ms);
    CHECK(l.max_queue == 0);
    CHECK(l.per_user);
    CHECK(l.max_instances_per_user == 2);
    CHECK(l.max_leases_per_user == 5);
    CHECK(l.recycle_jitter_pct == 100);
}

TEST_CASE("the key lists hold every key of the protocol's tables") {
    const std::vector<std::string> global{"runtime_dir",       "control_socket", "control_socket_mode",
                                          "threads",           "max_workers",    "max_clients",
                                          "shutdown_grace_ms", "metrics_listen"};
    const std::vector<std::string> pool{"path",
                                        "args",
                                        "version",
                                        "max_instances",
                                        "max_requests",
                                        "max_idletime_secs",
                                        "max_processtime_secs",
                                        "max_lifetime_secs",
                                        "min_idle",
                                        "listen",
                                        "notify",
                                        "lease_ttl_ms",
                                        "heartbeat_timeout_ms",
                                        "start_timeout_ms",
                                        "kill_grace_ms",
                                        "queue_timeout_ms",
                                        "max_queue",
                                        "per_user",
                                        "max_instances_per_user",
                                        "run_as",
                                        "allow_users",
                                        "allow_root",
                                        "max_leases_per_user",
                                        "recycle_jitter_pct"};
    CHECK(foreman::broker::global_keys() == global);
    CHECK(foreman::broker::pool_keys() == pool);
}

TEST_CASE("the help descriptions show every key with its default") {
    std::ostringstream help;
    help << foreman::broker::global_options(Environment{}) << foreman::broker::pool_options("NAME");
    const std::string text = help.str();
    for (const auto& key : foreman::broker::global_keys())
        CHECK(text.find("--" + key + " ") != std::string::npos);
    for (const auto& key : foreman::broker::pool_keys())
        CHECK(text.find("--pool.NAME." + key + " ") != std::string::npos);
    CHECK(text.find("(=256)") != std::string::npos);
    CHECK(text.find("(=30000)") != std::string::npos);
    CHECK(text.find("(=0660)") != std::string::npos);
    CHECK(text.find("(=activation)") != std::string::npos);
}

TEST_CASE("pools keep the order of the file, then of the command line") {
    Fixture f;
    const Config config = f.load("[pool.b]\npath = echo-worker\n[pool.a]\npath = echo-worker\n",
                                 {"--pool.c.path=echo-worker", "--pool.a.max_queue=3"});
    REQUIRE(config.pools.size() == 3);
    CHECK(config.pools[0].name == "b");
    CHECK(config.pools[1].name == "a");
    CHECK(config.pools[1].limits.max_queue == 3);
    CHECK(config.pools[2].name == "c");
}

TEST_CASE("pool names may hold dots, dashes and underscores") {
    Fixture f;
    const Config config = f.load("[pool.a.b-c_1]\npath = echo-worker\n", {"--pool.a.b-c_1.max_queue=2"});
    REQUIRE(config.pools.size() == 1);
    CHECK(config.pools[0].name == "a.b-c_1");
    CHECK(config.pools[0].limits.max_queue == 2);
}

TEST_CASE("comments, blank lines, blanks around = and CRLF line ends are allowed") {
    Fixture f;
    const Config config = f.load("# comment\r\n\r\n  max_workers=9   # trailing comment\r\n"
                                 "[pool.echo]   \r\n\tpath\t=\techo-worker\r\n");
    CHECK(config.global.max_workers == 9);
    REQUIRE(config.pools.size() == 1);
    CHECK(config.pools[0].path == f.worker);
}

// ---- the command line ------------------------------------------------------------------

TEST_CASE("the command line wins over the file") {
    Fixture f;
    const Config config =
        f.load("max_workers = 10\nthreads = 2\n[pool.echo]\npath = echo-worker\nmax_queue = 5\n",
               {"--max_workers=20", "--threads", "4", "--pool.echo.max_queue=6"});
    CHECK(config.global.max_workers == 20);
    CHECK(config.global.threads == 4);
    CHECK(config.pools.at(0).limits.max_queue == 6);
}

TEST_CASE("a pool may be declared on the command line alone") {
    Fixture f;
    const Config config = f.load("", {"--pool.cat.path=/bin/cat", "--pool.cat.args=-u"});
    REQUIRE(config.pools.size() == 1);
    CHECK(config.pools[0].name == "cat");
    CHECK(config.pools[0].path == "/bin/cat");
    CHECK(config.pools[0].args == std::vector<std::string>{"-u"});
}

TEST_CASE("an empty value on the command line clears a key of the file") {
    Fixture f;
    const Config config = f.load("[pool.echo]\npath = echo-worker\nargs = -v\n", {"--pool.echo.args="});
    CHECK(config.pools.at(0).args.empty());
}

TEST_CASE("a file value that the command line overrides is not checked") {
    Fixture f;
    const Config config = f.load("max_workers = lots\n", {"--max_workers=5"});
    CHECK(config.global.max_workers == 5);
}

TEST_CASE("a bad value on the command line names the option with its dashes") {
    Fixture f;
    const ConfigError e = f.load_error("", {"--max_workers=0"});
    CHECK(std::string(e.what()) == "--max_workers: '0' must be at least 1");
    CHECK(e.file().empty());
    CHECK(e.line() == 0);
    CHECK(e.key() == "--max_workers");

    CHECK(std::string(
              f.load_error("[pool.echo]\npath = echo-worker\n", {"--pool.echo.max_requests=abc"}).what()) ==
          "--pool.echo.max_requests: 'abc' is not a non-negative integer");
}

TEST_CASE("an unknown key on the command line is an error") {
    Fixture f;
    CHECK(std::string(f.load_error("", {"--frobnicate=1"}).what()) == "--frobnicate: unknown key");
    CHECK(f.load_error("", {"--path=/bin/cat"}).message().find("--pool.NAME.path") != std::string::npos);
    CHECK(f.load_error("", {"--pool.echo.threads=1"}).key() == "--pool.echo.threads");
    CHECK(f.load_error("", {"--pool.echo=1"}).key() == "--pool.echo");
    CHECK(f.load_error("", {"--pool.bad!name.path=/bin/cat"}).message().find("invalid pool name") !=
          std::string::npos);
}

TEST_CASE("a key given twice on the command line is an error") {
    Fixture f;
    const ConfigError e = f.load_error("", {"--threads=2", "--threads=3"});
    CHECK(std::string(e.what()) == "--threads: given twice");
}

TEST_CASE("a command-line argument that is not an option is an error") {
    Fixture f;
    CHECK(f.load_error("", {"stray"}).message().find("unexpected argument 'stray'") != std::string::npos);
    CHECK(f.load_error("", {"--threads=2", "-x"}).message().find("unexpected argument '-x'") !=
          std::string::npos);
}

TEST_CASE("an option without its value on the command line is an error") {
    Fixture f;
    const ConfigError e = f.load_error("", {"--threads"});
    CHECK(std::string(e.what()) == "--threads: needs a value");
}

// ---- values ---------------------------------------------------------------------------------

TEST_CASE("an unknown key in a pool section names the file, line and key") {
    Fixture f;
    const ConfigError e = f.load_error("max_workers = 4\n[pool.echo]\npath = echo-worker\nmax_request = 5\n");
    CHECK(e.file() == f.config_file());
    CHECK(e.line() == 4);
    CHECK(e.key() == "pool.echo.max_request");
    CHECK(std::string(e.what()) == f.config_file() + ":4: pool.echo.max_request: unknown key");
}

TEST_CASE("an unknown global key names the file, line and key") {
    Fixture f;
    CHECK(std::string(f.load_error("\n\nmax_worker = 4\n").what()) ==
          f.config_file() + ":3: max_worker: unknown key");
}

TEST_CASE("a pool key before the first section and a global key inside one are unknown keys") {
    Fixture f;
    const ConfigError before = f.load_error("path = /bin/cat\n");
    CHECK(before.line() == 1);
    CHECK(before.key() == "path");
    CHECK(before.message().find("outside a [pool.NAME] section") != std::string::npos);
    const ConfigError inside = f.load_error("[pool.echo]\npath = echo-worker\nthreads = 2\n");
    CHECK(inside.line() == 3);
    CHECK(inside.key() == "pool.echo.threads");
    CHECK(inside.message().find("global keys come before the first section") != std::string::npos);
}

TEST_CASE("a bad value in the file names the file, line and key") {
    Fixture f;
    const ConfigError e = f.load_error("[pool.echo]\npath = echo-worker\n\n# limits\nmax_requests = abc\n");
    CHECK(std::string(e.what()) ==
          f.config_file() + ":5: pool.echo.max_requests: 'abc' is not a non-negative integer");
    CHECK(e.line() == 5);
    CHECK(e.key() == "pool.echo.max_requests");
    CHECK(e.message() == "'abc' is not a non-negative integer");
}

TEST_CASE("numbers are parsed strictly") {
    Fixture f;
    const auto text = GENERATE(as<std::string>{}, "-1", "1.5", "12abc", "", "+5", "0x10", "1e3", "5 5", "１");
    const ConfigError e = f.echo_pool_error("max_requests = " + text + "\n");
    CHECK(e.line() == 3);
    CHECK(e.key() == "pool.echo.max_requests");
    CHECK(e.message() == "'" + text + "' is not a non-negative integer");
}

TEST_CASE("a number too large for its key is an error, not a wrap-around") {
    Fixture f;
    CHECK(f.echo_pool_error("max_requests = 18446744073709551616\n").message() ==
          "'18446744073709551616' must be at most 18446744073709551615");
    CHECK(f.echo_pool_error("max_instances = 4294967296\n").message() ==
          "'4294967296' must be at most 4294967295");
    CHECK(f.echo_pool_error("lease_ttl_ms = 99999999999999999999999\n").message() ==
          "'99999999999999999999999' must be at most 18446744073709551615");
    CHECK(f.echo_pool(" max_instances = 4294967295\n").limits.max_instances == 4294967295u);
}

TEST_CASE("numbers are checked against the range of their key") {
    Fixture f;
    CHECK(f.load_error("threads = 0\n").message() == "'0' must be at least 1");
    CHECK(f.load_error("threads = 1025\n").message() == "'1025' must be at most 1024");
    CHECK(f.load_error("max_workers = 0\n").message() == "'0' must be at least 1");
    CHECK(f.load_error("max_clients = 0\n").message() == "'0' must be at least 1");
    CHECK(f.echo_pool_error("version = 0\n").message() == "'0' must be at least 1");
    CHECK(f.echo_pool_error("lease_ttl_ms = 99\n").message() == "'99' must be at least 100");
    CHECK(f.echo_pool_error("start_timeout_ms = 0\n").message() == "'0' must be at least 1");
    CHECK(f.echo_pool_error("max_instances_per_user = 0\n").message() == "'0' must be at least 1");
    CHECK(f.echo_pool_error("recycle_jitter_pct = 101\n").message() == "'101' must be at most 100");
    CHECK(f.echo_pool_error("max_lifetime_secs = 4294967296\n").message() ==
          "'4294967296' must be at most 4294967295");
    CHECK(f.echo_pool("recycle_jitter_pct = 0\n").limits.recycle_jitter_pct == 0);
    CHECK(f.load("threads = 1024\n").global.threads == 1024);
}

TEST_CASE("booleans are yes/no, true/false, on/off or 1/0 in any case") {
    Fixture f;
    for (const char* yes : {"yes", "true", "on", "1", "YES", "True"})
        CHECK(f.echo_pool("allow_root = "s + yes + "\n").allow_root);
    for (const char* no : {"no", "false", "off", "0", "No", "OFF"})
        CHECK_FALSE(f.echo_pool("allow_root = "s + no + "\n").allow_root);
    for (const char* bad : {"maybe", "", "2", "y"}) {
        const ConfigError e = f.echo_pool_error("per_user = "s + bad + "\n");
        CHECK(e.key() == "pool.echo.per_user");
        CHECK(e.message() == "'"s + bad + "' is not a boolean (yes/no, true/false, on/off, 1/0)");
    }
}

TEST_CASE("control_socket_mode is octal permission bits") {
    Fixture f;
    CHECK(f.load("control_socket_mode = 0600\n").global.control_socket_mode == 0600);
    CHECK(f.load("control_socket_mode = 666\n").global.control_socket_mode == 0666);
    CHECK(f.load("control_socket_mode = 0777\n").global.control_socket_mode == 0777);
    CHECK(f.load_error("control_socket_mode = 0999\n").message() ==
          "'0999' is not an octal mode (like 0660)");
    CHECK(f.load_error("control_socket_mode = rw\n").message() == "'rw' is not an octal mode (like 0660)");
    CHECK(f.load_error("control_socket_mode =\n").message() == "'' is not an octal mode (like 0660)");
    CHECK(f.load_error("control_socket_mode = 04770\n").message() ==
          "'04770' must be at most 0777 (permission bits only)");
}

TEST_CASE("durations are whole milliseconds or seconds as their key says") {
    Fixture f;
    const PoolConfig p = f.echo_pool("max_idletime_secs = 5\nlease_ttl_ms = 250\n");
    CHECK(p.limits.max_idletime == 5s);
    CHECK(p.limits.lease_ttl == 250ms);
    CHECK(f.load("shutdown_grace_ms = 1500\n").global.shutdown_grace == 1500ms);
    CHECK(f.echo_pool_error("kill_grace_ms = 1.5\n").message() == "'1.5' is not a non-negative integer");
    CHECK(f.echo_pool_error("max_idletime_secs = 5s\n").message() == "'5s' is not a non-negative integer");
}

TEST_CASE("listen and notify take only their words") {
    Fixture f;
    CHECK(f.echo_pool("listen = activation\n").listen == ListenMode::activation);
    CHECK(f.echo_pool("notify = systemd\n").limits.notify == NotifyMode::systemd);
    CHECK(f.echo_pool("notify = none\n").limits.notify == NotifyMode::none);
    CHECK(f.echo_pool_error("listen = socket\n").message() == "'socket' is not one of activation, path");
    CHECK(f.echo_pool_error("notify = Systemd\n").message() ==
          "'Systemd' is not one of none, systemd, foreman");
}

TEST_CASE("metrics_listen is empty or host:port") {
    Fixture f;
    for (const char* good :
         {"127.0.0.1:9100", "[::1]:9100", "localhost:1", "metrics.example.org:65535", "0.0.0.0:80", "127.0.0.1:0"})
        CHECK(f.load("metrics_listen = "s + good + "\n").global.metrics_listen == good);
    for (const char* bad : {"9100", ":9100", "localhost:65536", "localhost:http", "::1:9100",
                            "[::1:9100", "[zz]:80", "300.1.1.1:80", "bad_host:80", "host:"}) {
        const ConfigError e = f.load_error("metrics_listen = "s + bad + "\n");
        CHECK(e.key() == "metrics_listen");
        CHECK(e.line() == 1);
    }
}

// ---- args --------------------------------------------------------------------------------

TEST_CASE("args are split as a shell splits words") {
    using foreman::broker::split_words;
    using W = std::vector<std::string>;
    CHECK(split_words("") == W{});
    CHECK(split_words("   \t ") == W{});
    CHECK(split_words("a  b\tc") == W{"a", "b", "c"});
    CHECK(split_words("'a b' \"c d\"") == W{"a b", "c d"});
    CHECK(split_words("x'a b'y") == W{"xa by"});
    CHECK(split_words("'' \"\"") == W{"", ""});
    CHECK(split_words("a\\ b") == W{"a b"});
    CHECK(split_words("\\'") == W{"'"});
    CHECK(split_words("'\\n'") == W{"\\n"});
    CHECK(split_words("\"\\\"q\\\" \\$x \\n\"") == W{"\"q\" $x \\n"});
    CHECK(split_words("\"it's\"") == W{"it's"});
    CHECK(split_words("$HOME ~ *.c a|b") == W{"$HOME", "~", "*.c", "a|b"});
    CHECK(split_words("--socket={socket} {worker}") == W{"--socket={socket}", "{worker}"});
    CHECK_THROWS_AS(split_words("'open"), std::invalid_argument);
    CHECK_THROWS_AS(split_words("\"open"), std::invalid_argument);
    CHECK_THROWS_AS(split_words("a\\"), std::invalid_argument);
}

TEST_CASE("an unterminated quote in args names the key and the value") {
    Fixture f;
    const ConfigError e = f.echo_pool_error("args = --name 'half\n");
    CHECK(e.line() == 3);
    CHECK(e.key() == "pool.echo.args");
    CHECK(e.message() == "'--name 'half': unterminated single quote");
}

TEST_CASE("a '#' starts a comment even inside quotes") {
    Fixture f;
    CHECK(f.echo_pool_error("args = \"#fff\"\n").message().find("unterminated double quote") !=
          std::string::npos);
    CHECK(f.echo_pool("args = \"a b\" # the greeting\n").args == std::vector<std::string>{"a b"});
}

TEST_CASE("{user} in args needs a per_user pool") {
    Fixture f;
    const ConfigError e = f.echo_pool_error("args = --user={user}\n");
    CHECK(e.key() == "pool.echo.args");
    CHECK(e.message() == "{user} needs per_user = yes");
    CHECK(f.echo_pool("per_user = yes\nargs = --user={user}\n").args ==
          std::vector<std::string>{"--user={user}"});
}

// ---- path --------------------------------------------------------------------------------

TEST_CASE("a pool path that is a bare name is looked up on PATH and made absolute") {
    Fixture f;
    f.dir.write("other/echo-worker", "#!/bin/sh\n", fs::perms(0755));
    f.dir.write("first/echo-worker", "not executable\n", fs::perms(0644));
    f.env.path = f.dir.path() + "/first:" + f.dir.path() + "/bin:" + f.dir.path() + "/other";
    CHECK(f.echo_pool("").path == f.worker);
}

TEST_CASE("a pool path with a slash is taken relative to the working directory") {
    Fixture f;
    CHECK(f.load("[pool.echo]\npath = bin/echo-worker\n").pools.at(0).path == f.worker);
    CHECK(f.load("[pool.echo]\npath = ./bin/../bin/echo-worker\n").pools.at(0).path == f.worker);
    CHECK(f.load("[pool.echo]\npath = " + f.worker + "\n").pools.at(0).path == f.worker);
}

TEST_CASE("an empty PATH entry is the working directory") {
    Fixture f;
    f.dir.write("here-worker", "#!/bin/sh\n", fs::perms(0755));
    f.env.path = "/nonexistent::";
    CHECK(f.load("[pool.echo]\npath = here-worker\n").pools.at(0).path == f.dir.path() + "/here-worker");
}

TEST_CASE("a pool without a path is an error at its section") {
    Fixture f;
    const ConfigError e = f.load_error("max_workers = 3\n\n[pool.echo]\nmax_queue = 3\n");
    CHECK(e.line() == 3);
    CHECK(e.key() == "pool.echo.path");
    CHECK(std::string(e.what()) ==
          f.config_file() + ":3: pool.echo.path: missing (every pool needs a path: the worker executable)");
    CHECK(f.load_error("", {"--pool.x.max_queue=1"}).key() == "--pool.x.path");
}

TEST_CASE("a pool path that does not exist names the key and the path") {
    Fixture f;
    const ConfigError e = f.load_error("[pool.echo]\npath = /nonexistent/worker\n");
    CHECK(e.line() == 2);
    CHECK(e.key() == "pool.echo.path");
    CHECK(e.message() == "'/nonexistent/worker' does not exist");
    CHECK(f.load_error("[pool.echo]\npath = bin/nope\n").message() ==
          "'bin/nope' (" + f.dir.path() + "/bin/nope) does not exist");
}

TEST_CASE("a pool path that is not an executable file names the key and the path") {
    Fixture f;
    const std::string text = f.dir.write("bin/text", "data\n", fs::perms(0644));
    CHECK(f.load_error("[pool.echo]\npath = " + text + "\n").message() == "'" + text + "' is not executable");
    CHECK(f.load_error("[pool.echo]\npath = " + f.dir.path() + "/bin\n").message() ==
          "'" + f.dir.path() + "/bin' is not a regular file");
}

TEST_CASE("a pool path not found on PATH names the key and the name") {
    Fixture f;
    const ConfigError e = f.load_error("[pool.echo]\npath = no-such-worker\n");
    CHECK(e.key() == "pool.echo.path");
    CHECK(e.message().starts_with("'no-such-worker' is not an executable found on PATH"));
    CHECK(f.load_error("[pool.echo]\npath =\n").message().starts_with("empty"));
}

// ---- the file's structure ---------------------------------------------------------------

TEST_CASE("a duplicate pool section names both lines") {
    Fixture f;
    const ConfigError e =
        f.load_error("[pool.echo]\npath = echo-worker\n[pool.cat]\npath = echo-worker\n[pool.echo]\n");
    CHECK(e.line() == 5);
    CHECK(e.key() == "[pool.echo]");
    CHECK(std::string(e.what()) == f.config_file() + ":5: [pool.echo]: duplicate section (first at line 1)");
}

TEST_CASE("a key given twice in a section names both lines") {
    Fixture f;
    const ConfigError e = f.load_error("[pool.echo]\npath = echo-worker\nmax_queue = 1\nmax_queue = 2\n");
    CHECK(std::string(e.what()) ==
          f.config_file() + ":4: pool.echo.max_queue: given twice (first at line 3)");
    CHECK(f.load_error("threads = 1\nthreads = 1\n").line() == 2);
    // The same key in two sections is two keys.
    CHECK(f.load("[pool.a]\npath = echo-worker\n[pool.b]\npath = echo-worker\n").pools.size() == 2);
}

TEST_CASE("a malformed line names the file and line") {
    Fixture f;
    const ConfigError e = f.load_error("threads = 2\njust some words\n");
    CHECK(e.line() == 2);
    CHECK(e.key().empty());
    CHECK(std::string(e.what()) ==
          f.config_file() + ":2: malformed line 'just some words' (expected 'key = value' or '[pool.NAME]')");
    CHECK(f.load_error("[pool.echo\n").line() == 1);
    CHECK(f.load_error("= 5\n").line() == 1);
}

TEST_CASE("a section other than [pool.NAME] is an error") {
    Fixture f;
    const ConfigError e = f.load_error("\n[global]\n");
    CHECK(e.line() == 2);
    CHECK(e.key() == "[global]");
    CHECK(e.message() == "unknown section; sections are [pool.NAME]");
    CHECK(f.load_error("[]\n").line() == 1);
    CHECK(f.load_error("[ pool.echo ]\n").message() == "unknown section; sections are [pool.NAME]");
}

TEST_CASE("a pool name outside [A-Za-z0-9_.-]{1,64} is an error") {
    Fixture f;
    CHECK(f.load_error("[pool.]\n").message().starts_with("invalid pool name ''"));
    CHECK(f.load_error("[pool.a b]\n").message().starts_with("invalid pool name 'a b'"));
    CHECK(f.load_error("[pool." + std::string(65, 'x') + "]\n").message().starts_with("invalid pool name"));
    CHECK(f.load_error("[pool.echo.]\n").message() == "a pool name ending in '.' cannot be a section name");
    CHECK(f.load("[pool." + std::string(40, 'x') + "]\npath = echo-worker\n").pools.size() == 1);
}

TEST_CASE("an unreadable config file is one error naming it") {
    Fixture f;
    const std::string missing = f.dir.path() + "/missing.conf";
    try {
        foreman::broker::load_config(missing, {}, f.env);
        FAIL("loaded a missing file");
    } catch (const ConfigError& e) {
        CHECK(std::string(e.what()) == missing + ": cannot read: No such file or directory");
        CHECK(e.file() == missing);
        CHECK(e.line() == 0);
    }
    CHECK_THROWS_WITH(foreman::broker::load_config(f.dir.path(), {}, f.env),
                      f.dir.path() + ": cannot read: Is a directory");
}

// ---- rules between keys ---------------------------------------------------------------------

TEST_CASE("min_idle may not exceed max_instances unless that is unlimited") {
    Fixture f;
    const ConfigError e = f.echo_pool_error("max_instances = 2\nmin_idle = 3\n");
    CHECK(e.line() == 4);
    CHECK(e.key() == "pool.echo.min_idle");
    CHECK(e.message() == "min_idle (3) is more than max_instances (2)");
    CHECK(f.echo_pool("max_instances = 0\nmin_idle = 3\n").limits.min_idle == 3);
    CHECK(f.echo_pool("max_instances = 3\nmin_idle = 3\n").limits.min_idle == 3);
}

TEST_CASE("min_idle above zero in a per_user pool is an error") {
    Fixture f;
    const ConfigError e = f.echo_pool_error("per_user = yes\nmin_idle = 1\n");
    CHECK(e.key() == "pool.echo.min_idle");
    CHECK(e.message().starts_with("min_idle must be 0 with per_user = yes"));
}

TEST_CASE("the min_idle of all pools may not exceed max_workers") {
    Fixture f;
    const ConfigError e = f.load_error("max_workers = 3\n[pool.a]\npath = echo-worker\nmin_idle = 2\n"
                                       "[pool.b]\npath = echo-worker\nmin_idle = 2\n");
    CHECK(e.line() == 7);
    CHECK(e.key() == "pool.b.min_idle");
    CHECK(e.message() == "min_idle of all pools adds up to 4, more than max_workers (3)");
}

TEST_CASE("heartbeat_timeout_ms needs a notify mode") {
    Fixture f;
    const ConfigError e = f.echo_pool_error("heartbeat_timeout_ms = 1000\n");
    CHECK(e.key() == "pool.echo.heartbeat_timeout_ms");
    CHECK(e.message().starts_with("needs notify = systemd or foreman"));
    CHECK(f.echo_pool("notify = systemd\nheartbeat_timeout_ms = 1000\n").limits.heartbeat_timeout == 1000ms);
}

// ---- users -----------------------------------------------------------------------------------

TEST_CASE("run_as {user} needs per_user and a root broker") {
    Fixture f;
    CHECK(f.echo_pool_error("run_as = {user}\n").message() == "{user} needs per_user = yes");
    f.env.uid = 1000;
    const ConfigError e = f.echo_pool_error("per_user = yes\nrun_as = {user}\n");
    CHECK(e.key() == "pool.echo.run_as");
    CHECK(e.message() == "{user} needs the broker to run as root (it runs as uid 1000)");
}

TEST_CASE("run_as root needs allow_root") {
    Fixture f;
    const ConfigError e = f.echo_pool_error("run_as = root\n");
    CHECK(e.key() == "pool.echo.run_as");
    CHECK(e.message() == "'root' is root; set allow_root = yes to allow it");
    CHECK(f.echo_pool_error("run_as = 0\n").message() == "'0' is root; set allow_root = yes to allow it");
    CHECK(f.echo_pool("run_as = root\nallow_root = yes\n").run_as == "root");
}

TEST_CASE("run_as another user needs a root broker") {
    Fixture f;
    CHECK(f.echo_pool("run_as = 4321\n").run_as == "4321");
    f.env.uid = 1000;
    CHECK(f.echo_pool_error("run_as = 4321\n").message() ==
          "'4321' needs the broker to run as root (it runs as uid 1000)");
    CHECK(f.echo_pool("run_as = 1000\n").run_as == "1000");
}

TEST_CASE("run_as must be a user name, a uid or {user}") {
    Fixture f;
    CHECK(f.echo_pool_error("run_as = no-such-user-here\n").message() == "unknown user 'no-such-user-here'");
    CHECK(f.echo_pool_error("run_as = a b\n").message() == "'a b' is not a user name, a uid or {user}");
    CHECK(f.echo_pool_error("run_as = {user}x\n").message() ==
          "'{user}x' is not a user name, a uid or {user}");
    CHECK(f.echo_pool_error("run_as = 4294967295\n").message() ==
          "'4294967295' is not a user name, a uid or {user}");
}

TEST_CASE("allow_users is a comma-separated list of names or uids, resolved at load") {
    Fixture f;
    const PoolConfig p = f.echo_pool("allow_users = root ,1000,  2000\n");
    CHECK(p.allow_users == std::vector<std::string>{"root", "1000", "2000"});
    CHECK(p.allow_uids == std::vector<uid_t>{0, 1000, 2000});
    CHECK(f.echo_pool_error("allow_users = root,,1000\n").message() == "empty user name in 'root,,1000'");
    CHECK(f.echo_pool_error("allow_users = root,\n").message() == "empty user name in 'root,'");
    CHECK(f.echo_pool_error("allow_users = no-such-user-here\n").message() ==
          "unknown user 'no-such-user-here'");
    CHECK(f.echo_pool_error("allow_users = a b\n").message() == "'a b' is not a user name or uid");
}

// ---- global paths ------------------------------------------------------------------------

TEST_CASE("runtime_dir and control_socket must be absolute") {
    Fixture f;
    CHECK(f.load_error("runtime_dir = run\n").message() == "'run' is not an absolute path");
    CHECK(f.load_error("control_socket = foreman.sock\n").message() ==
          "'foreman.sock' is not an absolute path");
    CHECK(f.load_error("runtime_dir =\n").message() == "'' is not an absolute path");
}

TEST_CASE("socket paths must fit a unix socket address") {
    Fixture f;
    const std::string long_dir = "/" + std::string(100, 'd');
    const ConfigError e = f.load_error("runtime_dir = " + long_dir + "\n", {"--control_socket=/tmp/c.sock"});
    CHECK(e.key() == "runtime_dir");
    CHECK(e.line() == 1);
    CHECK(f.load_error("control_socket = /" + std::string(107, 's') + "\n").key() == "control_socket");
    const ConfigError pool = f.load_error("runtime_dir = /" + std::string(40, 'd') + "\n[pool." +
                                          std::string(64, 'p') + "]\npath = echo-worker\n");
    CHECK(pool.line() == 2);
    CHECK(pool.message().find("longer than the 107 bytes") != std::string::npos);
}

// ---- REGISTER ---------------------------------------------------------------------------------

TEST_CASE("parse_pool reads a pool from key=value pairs") {
    Fixture f;
    const PoolConfig p =
        f.register_pool("echo", {{"path", "echo-worker"}, {"max_requests", "7"}, {"args", "a 'b c'"}});
    CHECK(p.name == "echo");
    CHECK(p.path == f.worker);
    CHECK(p.limits.max_requests == 7);
    CHECK(p.args == std::vector<std::string>{"a", "b c"});
    CHECK(p.limits.lease_ttl == 30000ms);
}

TEST_CASE("parse_pool errors name the bare key") {
    Fixture f;
    CHECK(std::string(f.register_error("echo", {{"path", "echo-worker"}, {"max_requests", "abc"}}).what()) ==
          "max_requests: 'abc' is not a non-negative integer");
    CHECK(std::string(f.register_error("echo", {{"path", "echo-worker"}, {"colour", "red"}}).what()) ==
          "colour: unknown key");
    CHECK(std::string(f.register_error("echo", {{"path", "echo-worker"}, {"threads", "2"}}).what()) ==
          "threads: unknown key");
    CHECK(std::string(f.register_error("echo", {{"max_queue", "2"}}).what()) ==
          "path: missing (every pool needs a path: the worker executable)");
    CHECK(std::string(f.register_error("echo", {{"path", "/nonexistent"}}).what()) ==
          "path: '/nonexistent' does not exist");
    CHECK(std::string(f.register_error("echo", {{"path", "echo-worker"}, {"path", "echo-worker"}}).what()) ==
          "path: given twice");
    CHECK(std::string(
              f.register_error("echo", {{"path", "echo-worker"}, {"max_instances", "1"}, {"min_idle", "2"}})
                  .what()) == "min_idle: min_idle (2) is more than max_instances (1)");
    CHECK(f.register_error("bad name", {{"path", "echo-worker"}}).message().starts_with("invalid pool name"));
}
