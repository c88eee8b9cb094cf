#pragma once
// The broker's configuration (PROTOCOL.md "Configuration file", every key
// and rule written down in docs/configuration.md): typed structs, and the
// loader that fills them from an INI file and `--key=value` overrides with
// Boost.Program_options, checking every value strictly. Any problem is one
// ConfigError naming the file, line and key.

#include "lease/pool_limits.hpp"

#include <boost/program_options/options_description.hpp>

#include <chrono>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <sys/types.h>
#include <utility>
#include <vector>

namespace foreman::broker {

/// Who binds a worker's socket (pool key `listen`).
enum class ListenMode {
    activation, ///< the broker binds it and passes it as fd 3 (socket activation)
    path,       ///< the worker binds `{socket}` itself
};

/// The keys before the first section of the file.
struct GlobalConfig {
    std::string runtime_dir;                         ///< notify and worker sockets; absolute
    std::string control_socket;                      ///< absolute; default <runtime_dir>/foreman.sock
    mode_t control_socket_mode = 0660;               ///< permission bits only
    unsigned threads = 1;                            ///< default: the number of cores
    std::uint32_t max_workers = 256;                 ///< across all pools
    std::uint32_t max_clients = 4096;                ///< open control connections
    std::chrono::milliseconds shutdown_grace{10000}; ///< SIGTERM waits this long for leases
    std::string metrics_listen;                      ///< "host:port", empty = no metrics

    bool operator==(const GlobalConfig&) const = default;
};

/// One `[pool.NAME]` section, or one REGISTER.
struct PoolConfig {
    std::string name;              ///< the protocol, [A-Za-z0-9_.-]{1,64}
    std::string path;              ///< the worker executable, absolute (resolved at load)
    std::vector<std::string> args; ///< split as a shell splits words; placeholders kept
    ListenMode listen = ListenMode::activation;
    std::string run_as;                   ///< user name, uid or "{user}"; empty = the broker's user
    std::vector<std::string> allow_users; ///< as written (names or uids); empty = anyone
    std::vector<uid_t> allow_uids;        ///< allow_users resolved at load, so leasing needs no NSS call
    bool allow_root = false;              ///< run_as may resolve to root
    lease::PoolLimits limits;             ///< what the lease engine needs

    bool operator==(const PoolConfig&) const = default;
};

struct Config {
    GlobalConfig global;
    std::vector<PoolConfig> pools; ///< in file order, then pools new on the command line
};

/// What the defaults and look-ups read from the process, passed in so that
/// tests need no setenv and no particular user.
struct Environment {
    std::optional<std::string> xdg_runtime_dir; ///< $XDG_RUNTIME_DIR
    std::optional<std::string> path;            ///< $PATH, for a pool path given as a bare name
    uid_t uid = 0;                              ///< the broker's effective uid
    unsigned hardware_threads = 1;              ///< the default of `threads`
    std::string working_dir = "/";              ///< relative pool paths are resolved against it

    /// The running process's.
    static Environment current();
};

/// A bad configuration. what() is the one line to print after "foreman: ",
/// e.g. "etc/foreman.conf:12: pool.echo.max_requests: 'abc' is not a
/// non-negative integer" or "--max_workers: '0' must be at least 1".
class ConfigError : public std::runtime_error {
public:
    ConfigError(std::string file, unsigned line, std::string key, std::string message);

    /// The config file, empty when the error is not in the file.
    const std::string& file() const noexcept { return file_; }
    /// 1-based line in file(), 0 when there is no line to name.
    unsigned line() const noexcept { return line_; }
    /// The key as the user wrote it: "pool.echo.path" in the file,
    /// "--pool.echo.path" on the command line, "path" in parse_pool;
    /// "[pool.echo]" for a whole section; empty when no key is involved.
    const std::string& key() const noexcept { return key_; }
    /// What is wrong, without the location.
    const std::string& message() const noexcept { return message_; }

private:
    std::string file_;
    unsigned line_;
    std::string key_;
    std::string message_;
};

/// Loads `file` (INI, [pool.NAME] sections) with `overrides` on top:
/// command-line arguments "--key=value", "--key value" or
/// "--pool.NAME.key=value", which win over the file and may declare pools
/// the file does not have. Resolves every pool path. Throws ConfigError.
Config load_config(const std::string& file, const std::vector<std::string>& overrides = {},
                   const Environment& env = Environment::current());

/// One pool from key=value pairs (REGISTER): the pool keys of the file, the
/// same checks, the errors naming the bare key ("max_requests: ..."). Checks
/// only what the pool's own keys decide; the caller compares it with the
/// global limits and the pools that exist. Throws ConfigError.
PoolConfig parse_pool(std::string name, const std::vector<std::pair<std::string, std::string>>& keys,
                      const Environment& env = Environment::current());

/// NAME of [pool.NAME]: 1 to 64 of [A-Za-z0-9_.-].
bool is_valid_pool_name(std::string_view name);

/// Splits `text` into words as a POSIX shell does, with quoting only: blanks
/// separate words, '...' is literal, "..." is literal except for \\ \" \$ \`
/// and backslash-newline, and an unquoted backslash quotes the next
/// character. No expansion of any kind. Throws std::invalid_argument on an
/// unterminated quote or a trailing backslash.
std::vector<std::string> split_words(std::string_view text);

/// The global keys, with their defaults and meaning (for --help; the loader
/// parses with the same description).
boost::program_options::options_description global_options(const Environment& env = Environment::current());

/// The keys of pool `name`, named "pool.<name>.<key>"; pass "NAME" for --help.
boost::program_options::options_description pool_options(const std::string& name);

/// Every global key, then every pool key, in the order of the tables.
const std::vector<std::string>& global_keys();
const std::vector<std::string>& pool_keys();

/// The config spelling: "activation", "path".
std::string_view to_string(ListenMode mode);
/// The config spelling of a notify mode: "none", "systemd", "foreman".
std::string_view notify_mode_name(lease::NotifyMode mode);

} // namespace foreman::broker
