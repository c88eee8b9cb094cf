#include "broker/config.hpp"

#include "broker/config_file.hpp"
#include "protocol/default_paths.hpp"

#include <boost/any.hpp>
#include <boost/program_options/parsers.hpp>
#include <boost/program_options/value_semantic.hpp>
#include <boost/program_options/variables_map.hpp>

#include <arpa/inet.h>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <limits>
#include <map>
#include <pwd.h>
#include <set>
#include <sstream>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>

namespace po = boost::program_options;

namespace foreman::broker {

namespace {

using namespace std::string_literals;

// ---- named limits ------------------------------------------------------------

/// sun_path holds 108 bytes with the terminating NUL.
constexpr std::size_t max_socket_path = 107;
/// What a worker socket path needs below <runtime_dir>/<protocol>/: a worker
/// id (up to 20 digits) and ".sock". Checked at load so that a long pool name
/// fails here and not at its first spawn.
constexpr std::size_t worker_socket_name_reserve = 25;
/// `threads` above this is a typo, not a machine.
constexpr std::uint64_t max_threads = 1024;
/// Every count, duration and version of the file fits 32 bits, except
/// max_requests (64 bits).
constexpr std::uint64_t max_u32 = std::numeric_limits<std::uint32_t>::max();
constexpr std::uint64_t max_u64 = std::numeric_limits<std::uint64_t>::max();
/// PATH when the environment has none (glibc's execvp default, plus /usr/local/bin).
constexpr const char* default_search_path = "/usr/local/bin:/usr/bin:/bin";
/// Longest user name accepted in run_as and allow_users (useradd's limit).
constexpr std::size_t max_user_name = 32;

// ---- messages ------------------------------------------------------------------

/// Quotes user text for a one-line message: control characters escaped,
/// long text cut.
std::string shown(std::string_view text) {
    constexpr std::size_t max_shown = 120;
    std::string out = "'";
    for (std::size_t i = 0; i < text.size() && i < max_shown; ++i) {
        const auto c = static_cast<unsigned char>(text[i]);
        if (c == '\n') out += "\\n";
        else if (c == '\t') out += "\\t";
        else if (c < 0x20 || c == 0x7f) {
            static constexpr char hex[] = "0123456789abcdef";
            out += "\\x";
            out += hex[c >> 4];
            out += hex[c & 15];
        } else out += static_cast<char>(c);
    }
    if (text.size() > max_shown) out += "...";
    out += "'";
    return out;
}

std::string compose(const std::string& file, unsigned line, const std::string& key,
                    const std::string& message) {
    std::string out;
    if (!file.empty()) {
        out += file;
        if (line != 0) out += ":" + std::to_string(line);
        out += ": ";
    }
    if (!key.empty()) out += key + ": ";
    out += message;
    return out;
}

/// A value that fails its check; the caller knows where it came from.
struct BadValue : std::runtime_error {
    using std::runtime_error::runtime_error;
};

bool is_digits(std::string_view s) {
    return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

std::string_view trim_blanks(std::string_view s) {
    const auto first = s.find_first_not_of(" \t");
    if (first == std::string_view::npos) return {};
    return s.substr(first, s.find_last_not_of(" \t") - first + 1);
}

// ---- value types: Program_options calls validate() for each ------------------

/// A non-negative decimal integer, parsed strictly: no sign, no fraction, no
/// blanks, no trailing text, no wrap-around (lexical_cast<unsigned>("-1") wraps).
struct Natural {
    std::uint64_t value = 0;
};

std::uint64_t parse_natural(const std::string& s) {
    if (!is_digits(s)) throw BadValue(shown(s) + " is not a non-negative integer");
    std::uint64_t n = 0;
    const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
    if (ec == std::errc::result_out_of_range)
        throw BadValue(shown(s) + " must be at most " + std::to_string(max_u64));
    if (ec != std::errc{} || end != s.data() + s.size())
        throw BadValue(shown(s) + " is not a non-negative integer");
    return n;
}

void validate(boost::any& out, const std::vector<std::string>& tokens, Natural*, int) {
    out = Natural{parse_natural(po::validators::get_single_string(tokens))};
}

/// A Natural within [min, max]: the range is checked where the text is at hand.
class NaturalValue : public po::typed_value<Natural> {
public:
    NaturalValue(std::uint64_t min, std::uint64_t max)
        : po::typed_value<Natural>(nullptr), min_(min), max_(max) {}

    void xparse(boost::any& out, const std::vector<std::string>& tokens) const override {
        po::typed_value<Natural>::xparse(out, tokens);
        const auto n = boost::any_cast<const Natural&>(out).value;
        if (n < min_) throw BadValue(shown(tokens.front()) + " must be at least " + std::to_string(min_));
        if (n > max_) throw BadValue(shown(tokens.front()) + " must be at most " + std::to_string(max_));
    }

private:
    std::uint64_t min_;
    std::uint64_t max_;
};

/// yes/no, true/false, on/off, 1/0, in any case.
struct Flag {
    bool on = false;
};

void validate(boost::any& out, const std::vector<std::string>& tokens, Flag*, int) {
    const auto& s = po::validators::get_single_string(tokens);
    std::string lower;
    for (char c : s) lower += static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    if (lower == "yes" || lower == "true" || lower == "on" || lower == "1") out = Flag{true};
    else if (lower == "no" || lower == "false" || lower == "off" || lower == "0") out = Flag{false};
    else throw BadValue(shown(s) + " is not a boolean (yes/no, true/false, on/off, 1/0)");
}

std::string_view yes_no(bool on) { return on ? "yes" : "no"; }

/// Permission bits in octal, like 0660 (or 660).
struct Mode {
    mode_t mode = 0;
};

void validate(boost::any& out, const std::vector<std::string>& tokens, Mode*, int) {
    const auto& s = po::validators::get_single_string(tokens);
    if (s.empty() || s.size() > 12 ||
        !std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '7'; }))
        throw BadValue(shown(s) + " is not an octal mode (like 0660)");
    const auto mode = std::strtoul(s.c_str(), nullptr, 8);
    if (mode > 0777) throw BadValue(shown(s) + " must be at most 0777 (permission bits only)");
    out = Mode{static_cast<mode_t>(mode)};
}

std::string octal(mode_t mode) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(mode));
    return buf;
}

/// An argument list split as a shell splits words.
struct Words {
    std::vector<std::string> words;
};

void validate(boost::any& out, const std::vector<std::string>& tokens, Words*, int) {
    const auto& s = po::validators::get_single_string(tokens);
    try {
        out = Words{split_words(s)};
    } catch (const std::invalid_argument& e) {
        throw BadValue(shown(s) + ": " + e.what());
    }
}

/// A user name (as useradd allows it) or a decimal uid.
bool is_user_name(std::string_view s) {
    if (s.empty() || s.size() > max_user_name) return false;
    if (s.back() == '$') s.remove_suffix(1);
    if (s.empty() || s.front() == '-') return false;
    return std::all_of(s.begin(), s.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
               c == '.' || c == '-';
    });
}

/// A uid as written: decimal, below (uid_t)-1, which means "no uid".
std::optional<uid_t> parse_uid(std::string_view s) {
    if (!is_digits(s)) return std::nullopt;
    std::uint64_t n = 0;
    const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
    if (ec != std::errc{} || n >= max_u32) return std::nullopt;
    return static_cast<uid_t>(n);
}

bool is_user(std::string_view s) { return is_digits(s) ? parse_uid(s).has_value() : is_user_name(s); }

/// The uid of a user name or uid; a uid needs no passwd entry (as chown).
std::optional<uid_t> resolve_user(const std::string& user) {
    if (is_digits(user)) return parse_uid(user);
    long size = sysconf(_SC_GETPW_R_SIZE_MAX);
    std::vector<char> buf(size > 0 ? static_cast<std::size_t>(size) : 16384);
    for (;;) {
        passwd pw{};
        passwd* found = nullptr;
        const int rc = getpwnam_r(user.c_str(), &pw, buf.data(), buf.size(), &found);
        if (rc == ERANGE && buf.size() < (1u << 20)) {
            buf.resize(buf.size() * 2);
            continue;
        }
        if (rc != 0 || found == nullptr) return std::nullopt;
        return pw.pw_uid;
    }
}

/// allow_users: comma-separated names or uids, blanks around each ignored.
struct UserList {
    std::vector<std::string> users;
};

void validate(boost::any& out, const std::vector<std::string>& tokens, UserList*, int) {
    const auto& s = po::validators::get_single_string(tokens);
    UserList list;
    if (!trim_blanks(s).empty()) {
        std::string_view rest = s;
        for (;;) {
            const auto comma = rest.find(',');
            const auto item = trim_blanks(rest.substr(0, comma));
            if (item.empty()) throw BadValue("empty user name in " + shown(s));
            if (!is_user(item)) throw BadValue(shown(item) + " is not a user name or uid");
            list.users.emplace_back(item);
            if (comma == std::string_view::npos) break;
            rest.remove_prefix(comma + 1);
        }
    }
    out = std::move(list);
}

/// run_as: empty, "{user}", a user name or a uid.
struct RunAs {
    std::string user;
};

constexpr std::string_view leasing_user = "{user}";

void validate(boost::any& out, const std::vector<std::string>& tokens, RunAs*, int) {
    const auto& s = po::validators::get_single_string(tokens);
    if (!s.empty() && s != leasing_user && !is_user(s))
        throw BadValue(shown(s) + " is not a user name, a uid or {user}");
    out = RunAs{s};
}

struct Listen {
    ListenMode mode = ListenMode::activation;
};

void validate(boost::any& out, const std::vector<std::string>& tokens, Listen*, int) {
    const auto& s = po::validators::get_single_string(tokens);
    if (s == "activation") out = Listen{ListenMode::activation};
    else if (s == "path") out = Listen{ListenMode::path};
    else throw BadValue(shown(s) + " is not one of activation, path");
}

struct Notify {
    lease::NotifyMode mode = lease::NotifyMode::none;
};

void validate(boost::any& out, const std::vector<std::string>& tokens, Notify*, int) {
    const auto& s = po::validators::get_single_string(tokens);
    if (s == "none") out = Notify{lease::NotifyMode::none};
    else if (s == "systemd") out = Notify{lease::NotifyMode::systemd};
    else if (s == "foreman") out = Notify{lease::NotifyMode::foreman};
    else throw BadValue(shown(s) + " is not one of none, systemd, foreman");
}

/// runtime_dir, control_socket: absolute, so that the broker and its clients
/// agree whatever their working directories.
struct AbsolutePath {
    std::string path;
};

void validate(boost::any& out, const std::vector<std::string>& tokens, AbsolutePath*, int) {
    const auto& s = po::validators::get_single_string(tokens);
    if (s.empty() || s.front() != '/') throw BadValue(shown(s) + " is not an absolute path");
    out = AbsolutePath{s};
}

/// metrics_listen: empty, or host:port with host a name, an IPv4 address or
/// a bracketed IPv6 address, and port 0 to 65535 (0: any free port; the
/// broker logs the one it bound).
struct HostPort {
    std::string text;
};

bool is_host_name(std::string_view host) {
    if (host.empty() || host.size() > 253) return false;
    for (;;) {
        const auto dot = host.find('.');
        const auto label = host.substr(0, dot);
        if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') return false;
        for (char c : label)
            if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-'))
                return false;
        if (dot == std::string_view::npos) return true;
        host.remove_prefix(dot + 1);
    }
}

void check_host_port(const std::string& s) {
    const auto colon = s.rfind(':');
    if (colon == std::string::npos) throw BadValue(shown(s) + " is not host:port");
    const std::string host = s.substr(0, colon);
    const std::string port = s.substr(colon + 1);
    if (host.empty()) throw BadValue(shown(s) + " has no host (like 127.0.0.1:9100)");
    if (!is_digits(port) || port.size() > 5 || std::stoul(port) > 65535)
        throw BadValue(shown(s) + ": port " + shown(port) + " is not a number from 0 to 65535");
    unsigned char addr[16];
    if (host.front() == '[') {
        if (host.back() != ']' || inet_pton(AF_INET6, host.substr(1, host.size() - 2).c_str(), addr) != 1)
            throw BadValue(shown(s) + ": " + shown(host) + " is not an IPv6 address");
    } else if (host.find(':') != std::string::npos) {
        throw BadValue(shown(s) + ": an IPv6 address goes in brackets, like [::1]:9100");
    } else if (host.find_first_not_of("0123456789.") == std::string::npos) {
        if (inet_pton(AF_INET, host.c_str(), addr) != 1)
            throw BadValue(shown(s) + ": " + shown(host) + " is not an IPv4 address");
    } else if (!is_host_name(host)) {
        throw BadValue(shown(s) + ": " + shown(host) + " is not a host name");
    }
}

void validate(boost::any& out, const std::vector<std::string>& tokens, HostPort*, int) {
    const auto& s = po::validators::get_single_string(tokens);
    if (!s.empty()) check_host_port(s);
    out = HostPort{s};
}

// ---- the key tables ------------------------------------------------------------

/// Adds a key whose default --help shows as `shown`. The loader reads only
/// the keys that were given; the others keep the defaults of GlobalConfig,
/// PoolConfig and lease::PoolLimits, from which these defaults are taken.
template <class T>
void add_key(po::options_description& desc, const std::string& name, const char* value_name, T default_value,
             const std::string& shown, const char* meaning) {
    desc.add_options()(name.c_str(),
                       po::value<T>()->value_name(value_name)->default_value(default_value, shown), meaning);
}

/// Adds a key whose default is empty (or, for path, that has none).
template <class T>
void add_key(po::options_description& desc, const std::string& name, const char* value_name,
             const char* meaning) {
    desc.add_options()(name.c_str(), po::value<T>()->value_name(value_name), meaning);
}

void add_natural(po::options_description& desc, const std::string& name, const char* value_name,
                 std::uint64_t shown_default, std::uint64_t min, std::uint64_t max, const char* meaning) {
    auto* value = new NaturalValue(min, max);
    value->value_name(value_name)->default_value(Natural{shown_default}, std::to_string(shown_default));
    desc.add_options()(name.c_str(), value, meaning);
}

GlobalConfig default_global(const Environment& env) {
    GlobalConfig g;
    g.runtime_dir = protocol::default_runtime_dir(env.xdg_runtime_dir, env.uid);
    g.control_socket = protocol::default_control_socket(g.runtime_dir);
    g.threads = std::max(1u, env.hardware_threads);
    return g;
}

void add_global_keys(po::options_description& desc, const Environment& env) {
    const GlobalConfig d = default_global(env);
    add_key(desc, "runtime_dir", "DIR", AbsolutePath{d.runtime_dir}, d.runtime_dir,
            "folder of the notify and worker sockets, created 0750; absolute "
            "(default $XDG_RUNTIME_DIR/foreman, else /run/foreman as root, "
            "else /tmp/foreman-<uid>)");
    add_key(desc, "control_socket", "PATH", AbsolutePath{d.control_socket}, "<runtime_dir>/foreman.sock",
            "the control socket clients connect to; absolute");
    add_key(desc, "control_socket_mode", "MODE", Mode{d.control_socket_mode}, octal(d.control_socket_mode),
            "file mode of the control socket, octal, at most 0777");
    add_natural(desc, "threads", "N", d.threads, 1, max_threads,
                "threads serving the control socket, 1 to 1024 (default: the number of cores)");
    add_natural(desc, "max_workers", "N", d.max_workers, 1, max_u32,
                "cap on workers across all pools, >= 1 and >= the sum of min_idle");
    add_natural(desc, "max_clients", "N", d.max_clients, 1, max_u32, "cap on open control connections, >= 1");
    add_natural(desc, "shutdown_grace_ms", "MS", static_cast<std::uint64_t>(d.shutdown_grace.count()), 0,
                max_u32, "how long SIGTERM waits for leases to end before stopping workers");
    add_key<HostPort>(desc, "metrics_listen", "HOST:PORT",
                      "where to serve Prometheus text metrics over HTTP, like 127.0.0.1:9100 "
                      "or [::1]:9100; empty = off");
}

/// The pool keys, named prefix + key ("pool.NAME." + key, or "" + key).
void add_pool_keys(po::options_description& desc, const std::string& prefix) {
    const PoolConfig defaults;
    const lease::PoolLimits& d = defaults.limits;
    const auto key = [&](const char* name) { return prefix + name; };
    add_key<std::string>(desc, key("path"), "PATH",
                         "required: the worker executable; absolute, relative to the working "
                         "directory if it holds a '/', else looked up on PATH; must be an "
                         "executable file when the config is loaded");
    add_key<Words>(desc, key("args"), "WORDS",
                   "arguments, split as a shell splits words (quotes and backslashes, no "
                   "expansion); {socket} {protocol} {worker} {user} are replaced; empty = none");
    add_natural(desc, key("version"), "N", d.version, 1, max_u32, "protocol version the pool serves, >= 1");
    add_natural(desc, key("max_instances"), "N", d.max_instances, 0, max_u32,
                "workers in this pool (starting + idle + leased + stopping); 0 = unlimited");
    add_natural(desc, key("max_requests"), "N", d.max_requests, 0, max_u64,
                "leases one worker serves, then it is retired; 0 = unlimited");
    add_natural(desc, key("max_idletime_secs"), "SECS", static_cast<std::uint64_t>(d.max_idletime.count()), 0,
                max_u32, "an idle worker is retired after this long; 0 = never");
    add_natural(desc, key("max_processtime_secs"), "SECS",
                static_cast<std::uint64_t>(d.max_processtime.count()), 0, max_u32,
                "a lease that lasts longer kills its worker; 0 = unlimited");
    add_natural(desc, key("max_lifetime_secs"), "SECS", static_cast<std::uint64_t>(d.max_lifetime.count()), 0,
                max_u32, "a worker is retired after this long, never while leased; 0 = unlimited");
    add_natural(desc, key("min_idle"), "N", d.min_idle, 0, max_u32,
                "idle workers kept ready ahead of demand; <= max_instances, 0 with per_user");
    add_key(desc, key("listen"), "activation|path", Listen{defaults.listen},
            std::string(to_string(defaults.listen)),
            "activation: the broker binds the worker socket and passes it as fd 3; "
            "path: the worker binds {socket} itself");
    add_key(desc, key("notify"), "none|systemd|foreman", Notify{d.notify},
            std::string(notify_mode_name(d.notify)),
            "none: ready when its socket accepts; systemd: READY=1 ends start-up, "
            "WATCHDOG=1 is a heartbeat; foreman: as systemd, and READY=1 while leased "
            "ends the lease");
    add_natural(desc, key("lease_ttl_ms"), "MS", static_cast<std::uint64_t>(d.lease_ttl.count()),
                static_cast<std::uint64_t>(lease::min_lease_ttl.count()), max_u32,
                "lease time-to-live, >= 100; every renewal sets expiry to now + ttl");
    add_natural(desc, key("heartbeat_timeout_ms"), "MS",
                static_cast<std::uint64_t>(d.heartbeat_timeout.count()), 0, max_u32,
                "needs notify = systemd or foreman: a leased worker silent this long is hung, "
                "its lease ends and it is killed; 0 = off");
    add_natural(desc, key("start_timeout_ms"), "MS", static_cast<std::uint64_t>(d.start_timeout.count()), 1,
                max_u32, "a worker not ready after this long is killed, >= 1");
    add_natural(desc, key("kill_grace_ms"), "MS", static_cast<std::uint64_t>(d.kill_grace.count()), 0,
                max_u32, "SIGTERM, then SIGKILL after this long");
    add_natural(desc, key("queue_timeout_ms"), "MS", static_cast<std::uint64_t>(d.queue_timeout.count()), 0,
                max_u32, "how long a LEASE waits for a worker by default; 0 = fail at once");
    add_natural(desc, key("max_queue"), "N", d.max_queue, 0, max_u32,
                "LEASEs waiting in this pool before new ones fail overloaded; 0 = unlimited");
    add_key(desc, key("per_user"), "yes|no", Flag{d.per_user}, std::string(yes_no(d.per_user)),
            "a worker serves only the user it was started for");
    add_natural(desc, key("max_instances_per_user"), "N", d.max_instances_per_user, 1, max_u32,
                "with per_user: workers one user may have, >= 1");
    add_key<RunAs>(desc, key("run_as"), "USER",
                   "user name or uid to run workers as, only when the broker is root; "
                   "{user} = the leasing user (per_user pools); empty = the broker's user");
    add_key<UserList>(desc, key("allow_users"), "USERS",
                      "comma-separated user names or uids whose peer credentials may lease; "
                      "empty = anyone who can open the control socket");
    add_key(desc, key("allow_root"), "yes|no", Flag{defaults.allow_root},
            std::string(yes_no(defaults.allow_root)), "lets run_as resolve to root");
    add_natural(desc, key("max_leases_per_user"), "N", d.max_leases_per_user, 0, max_u32,
                "live leases one user may hold in this pool; 0 = unlimited");
    add_natural(desc, key("recycle_jitter_pct"), "PCT", d.recycle_jitter_pct, 0, 100,
                "each worker's max_requests and max_lifetime_secs are drawn within +/- this "
                "percent, 0 to 100");
}

std::vector<std::string> names_of(const po::options_description& desc) {
    std::vector<std::string> names;
    for (const auto& option : desc.options()) names.push_back(option->long_name());
    return names;
}

bool contains(const std::vector<std::string>& keys, std::string_view key) {
    return std::find(keys.begin(), keys.end(), key) != keys.end();
}

// ---- executables ----------------------------------------------------------------

enum class FileCheck { ok, missing, not_regular, not_executable, other };

FileCheck check_executable(const std::string& path, int& error) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
        error = errno;
        return errno == ENOENT || errno == ENOTDIR ? FileCheck::missing : FileCheck::other;
    }
    if (!S_ISREG(st.st_mode)) return FileCheck::not_regular;
    if (::faccessat(AT_FDCWD, path.c_str(), X_OK, AT_EACCESS) != 0) return FileCheck::not_executable;
    return FileCheck::ok;
}

std::string absolute(const std::string& path, const std::string& working_dir) {
    if (!path.empty() && path.front() == '/') return std::filesystem::path(path).lexically_normal().string();
    return (std::filesystem::path(working_dir) / path).lexically_normal().string();
}

/// `path` as PROTOCOL.md has it: absolute, or found on PATH (and, as a shell
/// does, a name holding a '/' is relative to the working directory).
std::string resolve_executable(const std::string& path, const Environment& env) {
    if (path.empty()) throw BadValue("empty (every pool needs a path: the worker executable)");
    if (path.find('/') != std::string::npos) {
        const auto full = absolute(path, env.working_dir);
        const auto named = full == path ? shown(path) : shown(path) + " (" + full + ")";
        int error = 0;
        switch (check_executable(full, error)) {
        case FileCheck::ok: return full;
        case FileCheck::missing: throw BadValue(named + " does not exist");
        case FileCheck::not_regular: throw BadValue(named + " is not a regular file");
        case FileCheck::not_executable: throw BadValue(named + " is not executable");
        case FileCheck::other: throw BadValue(named + ": " + std::strerror(error));
        }
    }
    const std::string search = env.path.value_or(default_search_path);
    std::string_view rest = search;
    for (;;) {
        const auto colon = rest.find(':');
        std::string dir(rest.substr(0, colon));
        if (dir.empty()) dir = "."; // POSIX: an empty PATH entry is the working directory
        const auto candidate = absolute(dir + "/" + path, env.working_dir);
        int error = 0;
        if (check_executable(candidate, error) == FileCheck::ok) return candidate;
        if (colon == std::string_view::npos) break;
        rest.remove_prefix(colon + 1);
    }
    throw BadValue(shown(path) + " is not an executable found on PATH (" + shown(search) + ")");
}

// ---- where each value came from ---------------------------------------------------

struct Origin {
    std::string file; ///< empty: not the config file
    unsigned line = 0;
    std::string key; ///< as the user wrote it
};

[[noreturn]] void fail(const Origin& origin, const std::string& message) {
    throw ConfigError(origin.file, origin.line, origin.key, message);
}

/// The values given so far, converted and checked by Program_options, and
/// where each came from. The first value given for a key wins.
class Settings {
public:
    /// `file`: errors about keys not given name this file; `bare_pool_keys`:
    /// name pool keys "max_requests", not "pool.NAME.max_requests" (REGISTER).
    Settings(const po::options_description& desc, std::string file, bool bare_pool_keys)
        : desc_(desc), file_(std::move(file)), bare_pool_keys_(bare_pool_keys) {}

    void store(const po::option& option, Origin origin) {
        if (origins_.count(option.string_key) != 0) return;
        po::parsed_options one(&desc_);
        one.options.push_back(option);
        try {
            po::store(one, values_);
        } catch (const BadValue& e) {
            fail(origin, e.what());
        } catch (const po::error& e) {
            fail(origin, e.what());
        }
        origins_.emplace(option.string_key, std::move(origin));
    }

    bool given(const std::string& key) const { return origins_.count(key) != 0; }

    /// Where `key` came from, or (not given) the key itself.
    Origin where(const std::string& key) const {
        if (const auto it = origins_.find(key); it != origins_.end()) return it->second;
        return Origin{file_, 0, label(key)};
    }

    /// The given value of `key` in `out`; `out` keeps its default otherwise.
    template <class T>
    const T* get(const std::string& key) const {
        if (!given(key)) return nullptr;
        return &values_[key].as<T>();
    }

    std::string label(const std::string& key) const {
        if (!bare_pool_keys_ || !key.starts_with("pool.")) return key;
        return key.substr(key.rfind('.') + 1);
    }

private:
    const po::options_description& desc_;
    po::variables_map values_;
    std::map<std::string, Origin> origins_;
    std::string file_;
    bool bare_pool_keys_;
};

template <class Int>
void read_count(const Settings& s, const std::string& key, Int& out) {
    if (const auto* v = s.get<Natural>(key)) out = static_cast<Int>(v->value);
}

template <class Duration>
void read_duration(const Settings& s, const std::string& key, Duration& out) {
    if (const auto* v = s.get<Natural>(key)) out = Duration(static_cast<typename Duration::rep>(v->value));
}

void read_flag(const Settings& s, const std::string& key, bool& out) {
    if (const auto* v = s.get<Flag>(key)) out = v->on;
}

GlobalConfig build_global(const Settings& s, const Environment& env) {
    GlobalConfig g = default_global(env);
    if (const auto* v = s.get<AbsolutePath>("runtime_dir")) g.runtime_dir = v->path;
    g.control_socket = protocol::default_control_socket(g.runtime_dir);
    if (const auto* v = s.get<AbsolutePath>("control_socket")) g.control_socket = v->path;
    if (const auto* v = s.get<Mode>("control_socket_mode")) g.control_socket_mode = v->mode;
    read_count(s, "threads", g.threads);
    read_count(s, "max_workers", g.max_workers);
    read_count(s, "max_clients", g.max_clients);
    read_duration(s, "shutdown_grace_ms", g.shutdown_grace);
    if (const auto* v = s.get<HostPort>("metrics_listen")) g.metrics_listen = v->text;

    constexpr std::string_view notify_socket = "/notify.sock";
    if (g.runtime_dir.size() + notify_socket.size() > max_socket_path)
        fail(s.where("runtime_dir"), shown(g.runtime_dir) + " is too long: " + g.runtime_dir +
                                         std::string(notify_socket) + " would be longer than " +
                                         std::to_string(max_socket_path) + " bytes");
    if (g.control_socket.size() > max_socket_path)
        fail(s.where("control_socket"),
             shown(g.control_socket) + " is longer than " + std::to_string(max_socket_path) + " bytes");
    return g;
}

/// One pool from the settings of keys "pool.<name>.*". `missing_path` is
/// where to report a pool without a path.
PoolConfig build_pool(const std::string& name, const Settings& s, const Environment& env,
                      const Origin& missing_path) {
    const std::string k = "pool." + name + ".";
    PoolConfig p;
    p.name = name;
    auto& l = p.limits;

    const auto* path = s.get<std::string>(k + "path");
    if (path == nullptr) fail(missing_path, "missing (every pool needs a path: the worker executable)");
    try {
        p.path = resolve_executable(*path, env);
    } catch (const BadValue& e) {
        fail(s.where(k + "path"), e.what());
    }
    if (const auto* v = s.get<Words>(k + "args")) p.args = v->words;
    read_count(s, k + "version", l.version);
    read_count(s, k + "max_instances", l.max_instances);
    read_count(s, k + "max_requests", l.max_requests);
    read_duration(s, k + "max_idletime_secs", l.max_idletime);
    read_duration(s, k + "max_processtime_secs", l.max_processtime);
    read_duration(s, k + "max_lifetime_secs", l.max_lifetime);
    read_count(s, k + "min_idle", l.min_idle);
    if (const auto* v = s.get<Listen>(k + "listen")) p.listen = v->mode;
    if (const auto* v = s.get<Notify>(k + "notify")) l.notify = v->mode;
    read_duration(s, k + "lease_ttl_ms", l.lease_ttl);
    read_duration(s, k + "heartbeat_timeout_ms", l.heartbeat_timeout);
    read_duration(s, k + "start_timeout_ms", l.start_timeout);
    read_duration(s, k + "kill_grace_ms", l.kill_grace);
    read_duration(s, k + "queue_timeout_ms", l.queue_timeout);
    read_count(s, k + "max_queue", l.max_queue);
    read_flag(s, k + "per_user", l.per_user);
    read_count(s, k + "max_instances_per_user", l.max_instances_per_user);
    if (const auto* v = s.get<RunAs>(k + "run_as")) p.run_as = v->user;
    if (const auto* v = s.get<UserList>(k + "allow_users")) p.allow_users = v->users;
    read_flag(s, k + "allow_root", p.allow_root);
    read_count(s, k + "max_leases_per_user", l.max_leases_per_user);
    read_count(s, k + "recycle_jitter_pct", l.recycle_jitter_pct);

    // Rules between keys; each is reported at the key that was given.
    if (l.heartbeat_timeout.count() != 0 && l.notify == lease::NotifyMode::none)
        fail(s.where(k + "heartbeat_timeout_ms"),
             "needs notify = systemd or foreman (a notify = none worker sends no heartbeats)");
    if (l.max_instances != 0 && l.min_idle > l.max_instances)
        fail(s.where(k + (s.given(k + "min_idle") ? "min_idle" : "max_instances")),
             "min_idle (" + std::to_string(l.min_idle) + ") is more than max_instances (" +
                 std::to_string(l.max_instances) + ")");
    if (l.per_user && l.min_idle != 0)
        fail(s.where(k + (s.given(k + "min_idle") ? "min_idle" : "per_user")),
             "min_idle must be 0 with per_user = yes: a per-user worker is started for the "
             "user who leases it, not ahead of demand");
    if (!l.per_user)
        for (const auto& arg : p.args)
            if (arg.find(leasing_user) != std::string::npos)
                fail(s.where(k + "args"), "{user} needs per_user = yes");

    if (p.run_as == leasing_user) {
        if (!l.per_user) fail(s.where(k + "run_as"), "{user} needs per_user = yes");
        if (env.uid != 0)
            fail(s.where(k + "run_as"),
                 "{user} needs the broker to run as root (it runs as uid " + std::to_string(env.uid) + ")");
    } else if (!p.run_as.empty()) {
        const auto uid = resolve_user(p.run_as);
        if (!uid) fail(s.where(k + "run_as"), "unknown user " + shown(p.run_as));
        if (*uid == 0 && !p.allow_root)
            fail(s.where(k + "run_as"), shown(p.run_as) + " is root; set allow_root = yes to allow it");
        if (env.uid != 0 && *uid != env.uid)
            fail(s.where(k + "run_as"), shown(p.run_as) +
                                            " needs the broker to run as root (it runs as uid " +
                                            std::to_string(env.uid) + ")");
    }
    for (const auto& user : p.allow_users) {
        const auto uid = resolve_user(user);
        if (!uid) fail(s.where(k + "allow_users"), "unknown user " + shown(user));
        p.allow_uids.push_back(*uid);
    }
    return p;
}

// ---- sources --------------------------------------------------------------------

std::string read_file(const std::string& file) {
    const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw ConfigError(file, 0, "", "cannot read: "s + std::strerror(errno));
    std::string text;
    char buf[8192];
    for (;;) {
        const auto n = ::read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            const int error = errno;
            ::close(fd);
            throw ConfigError(file, 0, "", "cannot read: "s + std::strerror(error));
        }
        if (n == 0) break;
        text.append(buf, static_cast<std::size_t>(n));
    }
    ::close(fd);
    return text;
}

/// The command line as Program_options takes it: "--key=" (an empty value,
/// which it refuses) becomes "--key" "".
std::vector<std::string> normalized(const std::vector<std::string>& args) {
    std::vector<std::string> out;
    for (const auto& arg : args) {
        if (arg.starts_with("--") && arg.size() > 3 && arg.back() == '=' && arg.find('=') == arg.size() - 1) {
            out.push_back(arg.substr(0, arg.size() - 1));
            out.emplace_back();
        } else {
            out.push_back(arg);
        }
    }
    return out;
}

/// Checks the option names of the command line (Program_options would say
/// less) and returns the pools they name, in order of first appearance.
std::vector<std::string> command_line_pools(const std::vector<std::string>& args) {
    std::vector<std::string> pools;
    for (const auto& arg : args) {
        if (!arg.starts_with("--") || arg.size() == 2) continue; // values, "--", positionals
        const std::string option = arg.substr(0, arg.find('='));
        const std::string name = option.substr(2);
        if (!name.starts_with("pool.")) {
            if (!contains(global_keys(), name))
                throw ConfigError("", 0, option,
                                  contains(pool_keys(), name)
                                      ? "unknown key (a pool key is --pool.NAME." + name + ")"
                                      : "unknown key"s);
            continue;
        }
        const auto dot = name.rfind('.');
        if (dot < 5) throw ConfigError("", 0, option, "unknown key (pool keys are --pool.NAME.KEY)");
        const std::string pool = name.substr(5, dot - 5);
        const std::string key = name.substr(dot + 1);
        if (!is_valid_pool_name(pool))
            throw ConfigError("", 0, option,
                              "invalid pool name " + shown(pool) + " (1 to 64 of A-Z a-z 0-9 _ . -)");
        if (!contains(pool_keys(), key))
            throw ConfigError("", 0, option,
                              contains(global_keys(), key) ? "unknown key (a global key is --" + key + ")"
                                                           : "unknown key"s);
        if (!contains(pools, pool)) pools.push_back(pool);
    }
    return pools;
}

/// Program_options' complaint about a command line, without the option name
/// (the caller puts it first).
std::string command_line_problem(const po::error& e) {
    if (const auto* syntax = dynamic_cast<const po::invalid_command_line_syntax*>(&e)) {
        switch (syntax->kind()) {
        case po::invalid_syntax::missing_parameter:
        case po::invalid_syntax::empty_adjacent_parameter: return "needs a value";
        case po::invalid_syntax::extra_parameter: return "takes no value";
        default: break;
        }
    }
    if (dynamic_cast<const po::unknown_option*>(&e) != nullptr) return "unknown key";
    if (dynamic_cast<const po::multiple_occurrences*>(&e) != nullptr) return "given twice";
    return e.what();
}

po::parsed_options parse_command_line(const std::vector<std::string>& args,
                                      const po::options_description& desc) {
    namespace style = po::command_line_style;
    try {
        return po::command_line_parser(args)
            .options(desc)
            .style(style::allow_long | style::long_allow_adjacent | style::long_allow_next)
            .run();
    } catch (const po::error_with_option_name& e) {
        throw ConfigError("", 0, e.get_option_name(), command_line_problem(e));
    } catch (const po::error& e) {
        throw ConfigError("", 0, "", e.what());
    }
}

} // namespace

// ---- public ---------------------------------------------------------------------

ConfigError::ConfigError(std::string file, unsigned line, std::string key, std::string message)
    : std::runtime_error(compose(file, line, key, message)), file_(std::move(file)), line_(line),
      key_(std::move(key)), message_(std::move(message)) {}

Environment Environment::current() {
    Environment env;
    if (const char* xdg = std::getenv("XDG_RUNTIME_DIR")) env.xdg_runtime_dir = xdg;
    if (const char* path = std::getenv("PATH")) env.path = path;
    env.uid = ::geteuid();
    env.hardware_threads = std::max(1u, std::thread::hardware_concurrency());
    std::error_code ec;
    const auto cwd = std::filesystem::current_path(ec);
    if (!ec) env.working_dir = cwd.string();
    return env;
}

bool is_valid_pool_name(std::string_view name) {
    return !name.empty() && name.size() <= 64 && std::all_of(name.begin(), name.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
               c == '.' || c == '-';
    });
}

std::vector<std::string> split_words(std::string_view text) {
    std::vector<std::string> words;
    std::string word;
    bool in_word = false; // also true for a word of quotes only, like ''
    for (std::size_t i = 0; i < text.size(); ++i) {
        const char c = text[i];
        if (c == ' ' || c == '\t' || c == '\n') {
            if (in_word) words.push_back(std::move(word));
            word.clear();
            in_word = false;
        } else if (c == '\\') {
            if (i + 1 == text.size()) throw std::invalid_argument("ends with a backslash");
            ++i;
            if (text[i] == '\n') continue; // line continuation
            word += text[i];
            in_word = true;
        } else if (c == '\'') {
            const auto close = text.find('\'', i + 1);
            if (close == std::string_view::npos) throw std::invalid_argument("unterminated single quote");
            word.append(text.substr(i + 1, close - i - 1));
            i = close;
            in_word = true;
        } else if (c == '"') {
            in_word = true;
            for (++i;; ++i) {
                if (i == text.size()) throw std::invalid_argument("unterminated double quote");
                if (text[i] == '"') break;
                if (text[i] == '\\' && i + 1 < text.size() &&
                    std::string_view("\\\"$`\n").find(text[i + 1]) != std::string_view::npos) {
                    ++i;
                    if (text[i] != '\n') word += text[i];
                    continue;
                }
                word += text[i];
            }
        } else {
            word += c;
            in_word = true;
        }
    }
    if (in_word) words.push_back(std::move(word));
    return words;
}

po::options_description global_options(const Environment& env) {
    po::options_description desc("Global keys (before the first section of the file, or --KEY=VALUE)");
    add_global_keys(desc, env);
    return desc;
}

po::options_description pool_options(const std::string& name) {
    po::options_description desc("Pool keys (in a [pool.NAME] section, or --pool.NAME.KEY=VALUE)");
    add_pool_keys(desc, "pool." + name + ".");
    return desc;
}

const std::vector<std::string>& global_keys() {
    static const std::vector<std::string> keys = [] {
        po::options_description desc;
        add_global_keys(desc, Environment{});
        return names_of(desc);
    }();
    return keys;
}

const std::vector<std::string>& pool_keys() {
    static const std::vector<std::string> keys = [] {
        po::options_description desc;
        add_pool_keys(desc, "");
        return names_of(desc);
    }();
    return keys;
}

std::string_view to_string(ListenMode mode) {
    switch (mode) {
    case ListenMode::activation: return "activation";
    case ListenMode::path: return "path";
    }
    return "?";
}

std::string_view notify_mode_name(lease::NotifyMode mode) {
    switch (mode) {
    case lease::NotifyMode::none: return "none";
    case lease::NotifyMode::systemd: return "systemd";
    case lease::NotifyMode::foreman: return "foreman";
    }
    return "?";
}

Config load_config(const std::string& file, const std::vector<std::string>& overrides,
                   const Environment& env) {
    const std::string text = read_file(file);
    const FileLayout layout = scan_config_file(text, file, global_keys(), pool_keys());
    const std::vector<std::string> args = normalized(overrides);

    std::vector<std::string> pools;
    for (const auto& section : layout.sections) pools.push_back(section.pool);
    for (auto& pool : command_line_pools(args))
        if (!contains(pools, pool)) pools.push_back(std::move(pool));

    po::options_description desc;
    add_global_keys(desc, env);
    for (const auto& pool : pools) add_pool_keys(desc, "pool." + pool + ".");
    Settings settings(desc, file, false);

    // The command line first: the first value stored for a key wins.
    std::set<std::string> seen;
    for (const auto& option : parse_command_line(args, desc).options) {
        if (option.position_key >= 0 || option.string_key.empty())
            throw ConfigError(
                "", 0, "",
                "unexpected argument " +
                    shown(option.original_tokens.empty() ? "" : option.original_tokens.front()) +
                    " (keys are given as --KEY=VALUE)");
        const std::string label = "--" + option.string_key;
        if (!seen.insert(option.string_key).second) throw ConfigError("", 0, label, "given twice");
        settings.store(option, Origin{"", 0, label});
    }

    std::istringstream in(text);
    po::parsed_options from_file(&desc);
    try {
        from_file = po::parse_config_file(in, desc);
    } catch (const po::error& e) { // the scanner should have caught it first
        throw ConfigError(file, 0, "", e.what());
    }
    for (const auto& option : from_file.options)
        settings.store(option, Origin{file, layout.line_of(option.string_key), option.string_key});

    Config config;
    config.global = build_global(settings, env);
    std::uint64_t min_idle_total = 0;
    for (const auto& pool : pools) {
        const unsigned section = layout.section_line(pool);
        const Origin missing_path = section != 0 ? Origin{file, section, "pool." + pool + ".path"}
                                                 : Origin{"", 0, "--pool." + pool + ".path"};
        config.pools.push_back(build_pool(pool, settings, env, missing_path));
        const auto& limits = config.pools.back().limits;

        min_idle_total += limits.min_idle;
        if (min_idle_total > config.global.max_workers)
            fail(settings.where("pool." + pool + ".min_idle"),
                 "min_idle of all pools adds up to " + std::to_string(min_idle_total) +
                     ", more than max_workers (" + std::to_string(config.global.max_workers) + ")");
        const auto socket_path =
            config.global.runtime_dir.size() + 1 + pool.size() + 1 + worker_socket_name_reserve;
        if (socket_path > max_socket_path)
            fail(section != 0 ? Origin{file, section, "[pool." + pool + "]"}
                              : Origin{"", 0, "--pool." + pool},
                 "worker socket paths <runtime_dir>/" + pool + "/<worker>.sock would be longer than the " +
                     std::to_string(max_socket_path) +
                     " bytes of a unix socket path; use a shorter pool name "
                     "or runtime_dir");
    }
    return config;
}

PoolConfig parse_pool(std::string name, const std::vector<std::pair<std::string, std::string>>& keys,
                      const Environment& env) {
    if (!is_valid_pool_name(name))
        throw ConfigError("", 0, "", "invalid pool name " + shown(name) + " (1 to 64 of A-Z a-z 0-9 _ . -)");
    const std::string prefix = "pool." + name + ".";
    po::options_description desc;
    add_pool_keys(desc, prefix);
    Settings settings(desc, "", true);

    std::set<std::string> seen;
    for (const auto& [key, value] : keys) {
        if (!contains(pool_keys(), key)) throw ConfigError("", 0, key, "unknown key");
        if (!seen.insert(key).second) throw ConfigError("", 0, key, "given twice");
        po::option option(prefix + key, {value});
        option.original_tokens = {key, value};
        settings.store(option, Origin{"", 0, key});
    }
    return build_pool(name, settings, env, Origin{"", 0, "path"});
}

} // namespace foreman::broker
