// foremanctl: the command-line client of the broker (docs/client.md).

#include "client/broker_address.hpp"
#include "client/connection.hpp"
#include "protocol/end_reason.hpp"

#include <boost/json.hpp>
#include <boost/program_options.hpp>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <iostream>
#include <optional>
#include <poll.h>
#include <stdexcept>
#include <string>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

namespace po = boost::program_options;
namespace json = boost::json;
using namespace foreman;
using client::Error;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

namespace {

// ---- exit statuses (docs/client.md) -------------------------------------------------

constexpr int exit_ok = 0;
constexpr int exit_refused = 1;     ///< the broker answered FAIL
constexpr int exit_usage = 2;       ///< bad command line
constexpr int exit_unreachable = 3; ///< cannot connect, connection lost, or a protocol error

/// A command-line mistake: exit_usage.
struct UsageError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

constexpr const char* main_usage = R"(Usage: foremanctl [--socket PATH] COMMAND [ARGS...]

Commands:
  status [--json]                     pools and their workers
  lease PROTOCOL [OPTIONS] [-- CMD [ARG...]]
                                      lease a worker; run CMD on its connection
  release ID                          end a lease
  renew ID                            renew a lease; prints "ttl <ms>"
  register PROTOCOL KEY=VALUE...      add a pool (root or the broker's uid)
  unregister PROTOCOL                 drain and remove a pool

Options:
  --socket PATH   the broker's control socket (default: $FOREMAN_SOCKET,
                  else the broker's default path)
  -h, --help      this text; `foremanctl COMMAND --help` for a command's

Exit status: 0 done; 1 the broker refused (FAIL); 2 usage error; 3 the broker
cannot be reached or the connection failed. `lease ... -- CMD` exits with
CMD's status (128+N when a signal N killed it).
)";

// ---- command-line plumbing ------------------------------------------------------------

struct Common {
    std::optional<std::string> socket;
};

po::options_description command_options(const std::string& caption) {
    po::options_description d(caption);
    d.add_options()("help,h", "this text")("socket", po::value<std::string>(), "the broker's control socket");
    return d;
}

/// Parses a command's arguments; prints its help and returns nullopt on --help.
std::optional<po::variables_map> parse(const std::vector<std::string>& args, const po::options_description& desc,
                                       const po::positional_options_description& pos, const std::string& usage,
                                       Common& common) {
    po::variables_map vm;
    po::store(po::command_line_parser(args).options(desc).positional(pos).run(), vm);
    if (vm.count("help")) {
        std::cout << "Usage: foremanctl " << usage << "\n\n" << desc;
        return std::nullopt;
    }
    po::notify(vm);
    if (vm.count("socket")) common.socket = vm["socket"].as<std::string>();
    return vm;
}

std::uint64_t parse_id(const std::string& text) {
    std::uint64_t id = 0;
    if (!protocol::parse_u64(text, id)) throw UsageError("'" + text + "' is not a lease id");
    return id;
}

client::Connection connect(const Common& common) {
    return client::Connection::connect(client::broker_address(common.socket));
}

// ---- status -----------------------------------------------------------------------------

std::string text_of(const json::value* v) {
    if (!v || v->is_null()) return "-";
    if (v->is_string()) {
        std::string s(v->get_string());
        return s.empty() ? "-" : s;
    }
    if (v->is_bool()) return v->get_bool() ? "yes" : "no";
    return json::serialize(*v);
}

const json::value* field(const json::object& o, const char* key) { return o.if_contains(key); }

void print_table(const std::vector<std::vector<std::string>>& rows) {
    std::vector<std::size_t> width;
    for (const auto& r : rows)
        for (std::size_t i = 0; i < r.size(); ++i) {
            if (width.size() <= i) width.push_back(0);
            width[i] = std::max(width[i], r[i].size());
        }
    for (const auto& r : rows) {
        std::string line = "  ";
        for (std::size_t i = 0; i < r.size(); ++i) {
            line += r[i];
            if (i + 1 < r.size()) line += std::string(width[i] - r[i].size() + 2, ' ');
        }
        std::cout << line << "\n";
    }
}

void print_status(const json::value& status) {
    const auto* root = status.if_object();
    if (!root) throw Error(Error::Kind::protocol, "STATUS: the json is not an object");
    std::cout << "broker: protocol " << text_of(field(*root, "version")) << ", workers "
              << text_of(field(*root, "workers_total")) << " of " << text_of(field(*root, "max_workers"));
    if (const auto* s = field(*root, "shutting_down"); s && s->is_bool() && s->get_bool()) std::cout << ", shutting down";
    std::cout << "\n";
    const auto* pools = field(*root, "pools");
    if (!pools || !pools->is_array()) return;
    for (const auto& pv : pools->get_array()) {
        const auto* pool = pv.if_object();
        if (!pool) continue;
        const auto* workers = field(*pool, "workers");
        std::size_t count = workers && workers->is_array() ? workers->get_array().size() : 0;
        std::cout << "\npool " << text_of(field(*pool, "protocol")) << ": queued " << text_of(field(*pool, "queued"))
                  << ", leases granted " << text_of(field(*pool, "leases_granted")) << ", workers " << count;
        if (const auto* d = field(*pool, "draining"); d && d->is_bool() && d->get_bool()) std::cout << ", draining";
        std::cout << "\n";
        if (const auto* users = field(*pool, "users"); users && users->is_array() && !users->get_array().empty()) {
            // Per-user lease counts: who holds and awaits this pool's workers.
            std::vector<std::vector<std::string>> rows{{"USER", "LEASES", "WAITING", "WORKERS"}};
            for (const auto& uv : users->get_array()) {
                const auto* u = uv.if_object();
                if (!u) continue;
                rows.push_back({text_of(field(*u, "user")), text_of(field(*u, "leases")),
                                text_of(field(*u, "waiting")), text_of(field(*u, "workers"))});
            }
            print_table(rows);
        }
        if (count == 0) continue;
        std::vector<std::vector<std::string>> rows{{"ID", "PID", "STATE", "REQUESTS", "USER", "LEASE", "STATUS"}};
        for (const auto& wv : workers->get_array()) {
            const auto* w = wv.if_object();
            if (!w) continue;
            rows.push_back({text_of(field(*w, "id")), text_of(field(*w, "pid")), text_of(field(*w, "state")),
                            text_of(field(*w, "requests")), text_of(field(*w, "user")), text_of(field(*w, "lease")),
                            text_of(field(*w, "status"))});
        }
        print_table(rows);
    }
}

int cmd_status(const std::vector<std::string>& args, Common& common) {
    auto desc = command_options("Options");
    desc.add_options()("json", "print the STATUS json as the broker sent it (one line)");
    auto vm = parse(args, desc, {}, "status [--json]", common);
    if (!vm) return exit_ok;
    auto conn = connect(common);
    auto status = conn.status();
    if (vm->count("json")) std::cout << json::serialize(status) << "\n";
    else print_status(status);
    return exit_ok;
}

// ---- lease ---------------------------------------------------------------------------------

/// Keeps a lease alive while foremanctl waits for something: renews it at
/// ttl/3 and reports its EXPIRED line once.
class Keeper {
public:
    Keeper(client::Connection& conn, client::Lease& lease) : conn_(conn), lease_(lease) {
        conn_.on_expired([this](const client::Expired& e) {
            if (e.lease_id != lease_.id()) return;
            ended_ = true;
            lease_.forget();
            // Once the work is done, a notify=foreman worker's READY=1 is the
            // normal end of the lease, not news.
            if (done_ && e.reason == protocol::EndReason::worker_ready) return;
            std::cerr << "foremanctl: lease " << e.lease_id << " expired: " << protocol::to_string(e.reason)
                      << std::endl;
        });
        schedule();
    }
    ~Keeper() { conn_.on_expired(nullptr); }
    Keeper(const Keeper&) = delete;
    Keeper& operator=(const Keeper&) = delete;

    bool connected() const { return connected_; }
    /// The control socket to poll, or -1 once the connection is gone.
    int fd() const { return connected_ ? conn_.fd() : -1; }
    /// How long poll may sleep before the next renewal is due.
    int timeout_ms() const {
        if (ended_ || !connected_ || !renewing_) return -1;
        // Rounded up: a poll that wakes a little early must not spin.
        auto left = std::chrono::ceil<milliseconds>(renew_at_ - Clock::now()).count();
        return static_cast<int>(std::clamp<milliseconds::rep>(left, 0, 24 * 3600 * 1000));
    }

    /// After poll: read what the broker sent (when `readable`), renew when due.
    void tick(bool readable) {
        if (!connected_) return;
        try {
            if (readable) conn_.poll(milliseconds(0));
            if (!ended_ && renewing_ && Clock::now() >= renew_at_) {
                try {
                    lease_.renew();
                } catch (const Error& e) {
                    if (!e.is(protocol::FailCode::no_such_lease)) throw;
                    // It ended; its EXPIRED line says why (or said already).
                    ended_ = true;
                    lease_.forget();
                    conn_.poll(milliseconds(0));
                }
                schedule();
            }
        } catch (const Error& e) {
            if (e.kind() == Error::Kind::refused) {
                // Odd (RENEW refused other than no-such-lease): keep waiting, stop renewing.
                std::cerr << "foremanctl: " << e.what() << std::endl;
                renewing_ = false;
                return;
            }
            std::cerr << "foremanctl: " << e.what() << " (lease " << lease_.id() << " is lost)" << std::endl;
            connected_ = false;
            lease_.forget();
        }
    }

    /// Releases the lease unless it has ended; a lease that ended meanwhile
    /// (no-such-lease) is not an error.
    void finish() {
        done_ = true;
        if (!connected_ || ended_ || !lease_.held()) return lease_.forget();
        try {
            lease_.release();
        } catch (const Error& e) {
            if (!e.is(protocol::FailCode::no_such_lease)) throw;
        }
    }

private:
    void schedule() { renew_at_ = Clock::now() + std::max(milliseconds(10), lease_.ttl() / 3); }

    client::Connection& conn_;
    client::Lease& lease_;
    Clock::time_point renew_at_;
    bool ended_ = false;     ///< EXPIRED, or RENEW said no-such-lease
    bool done_ = false;      ///< the command (or the copy) is over: finish() was called
    bool connected_ = true;  ///< the control connection still works
    bool renewing_ = true;
};

int exit_status_of(int status) {
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return 1;
}

/// Runs `cmd` with the worker connection as its stdin and stdout.
int run_command(client::Connection& conn, client::Lease& lease, const std::vector<std::string>& cmd) {
    spawn::unique_fd worker = lease.take_fd();
    // dup2 onto 0 or 1 from 0 or 1 itself would keep FD_CLOEXEC: move it up.
    if (worker.get() <= 2) {
        worker.reset(::fcntl(worker.get(), F_DUPFD_CLOEXEC, 3));
        if (!worker) throw Error(Error::Kind::io, std::string("fcntl: ") + std::strerror(errno));
    }
    std::vector<char*> argv;
    for (const auto& a : cmd) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);

    // Like system(): the terminal's ^C and ^\ are for CMD; we stay to release.
    struct sigaction ignore{}, old_int{}, old_quit{};
    ignore.sa_handler = SIG_IGN;
    sigemptyset(&ignore.sa_mask);
    ::sigaction(SIGINT, &ignore, &old_int);
    ::sigaction(SIGQUIT, &ignore, &old_quit);

    std::cout.flush();
    pid_t pid = ::fork();
    if (pid < 0) {
        int err = errno;
        ::sigaction(SIGINT, &old_int, nullptr);
        ::sigaction(SIGQUIT, &old_quit, nullptr);
        throw Error(Error::Kind::io, std::string("fork: ") + std::strerror(err));
    }
    if (pid == 0) {
        ::signal(SIGINT, SIG_DFL);
        ::signal(SIGQUIT, SIG_DFL);
        ::signal(SIGPIPE, SIG_DFL);
        if (::dup2(worker.get(), 0) < 0 || ::dup2(worker.get(), 1) < 0) _exit(127);
        ::execvp(argv[0], argv.data());
        int err = errno;
        std::string msg = "foremanctl: " + cmd[0] + ": " + std::strerror(err) + "\n";
        [[maybe_unused]] auto n = ::write(2, msg.data(), msg.size());
        _exit(err == ENOENT ? 127 : 126);
    }
    worker.reset(); // CMD holds the worker connection now; EOF reaches the worker when CMD closes it

    Keeper keeper(conn, lease);
    int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
    int status = 0;
    for (;;) {
        pollfd fds[2] = {{pidfd, POLLIN, 0}, {keeper.fd(), POLLIN, 0}};
        int timeout = keeper.timeout_ms();
        if (pidfd < 0) timeout = timeout < 0 ? 50 : std::min(timeout, 50); // no pidfd: look now and then
        int rc = ::poll(fds, 2, timeout);
        if (rc < 0 && errno != EINTR) throw Error(Error::Kind::io, std::string("poll: ") + std::strerror(errno));
        if (::waitpid(pid, &status, WNOHANG) == pid) break;
        keeper.tick(rc > 0 && (fds[1].revents & (POLLIN | POLLHUP | POLLERR)));
    }
    if (pidfd >= 0) ::close(pidfd);
    ::sigaction(SIGINT, &old_int, nullptr);
    ::sigaction(SIGQUIT, &old_quit, nullptr);
    try {
        keeper.finish();
    } catch (const Error& e) {
        std::cerr << "foremanctl: " << e.what() << std::endl;
    }
    return exit_status_of(status);
}

void write_all(int fd, const char* p, std::size_t n) {
    while (n > 0) {
        ssize_t w = ::write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            throw std::system_error(errno, std::generic_category(), "write");
        }
        p += w;
        n -= static_cast<std::size_t>(w);
    }
}

/// Copies stdin to the worker and the worker to stdout until the worker
/// closes its end (our stdin's EOF is passed on as a half-close).
int copy_stdio(client::Connection& conn, client::Lease& lease) {
    int worker = lease.fd();
    ::fcntl(worker, F_SETFL, ::fcntl(worker, F_GETFL) | O_NONBLOCK);
    Keeper keeper(conn, lease);
    std::string to_worker; // read from stdin, not yet written to the worker
    bool stdin_open = true;
    char buf[64 * 1024];
    for (;;) {
        bool want_stdin = stdin_open && to_worker.empty();
        pollfd fds[3] = {{want_stdin ? 0 : -1, POLLIN, 0},
                         {worker, static_cast<short>(POLLIN | (to_worker.empty() ? 0 : POLLOUT)), 0},
                         {keeper.fd(), POLLIN, 0}};
        int rc = ::poll(fds, 3, keeper.timeout_ms());
        if (rc < 0 && errno != EINTR) throw Error(Error::Kind::io, std::string("poll: ") + std::strerror(errno));
        if (rc > 0 && (fds[0].revents & (POLLIN | POLLHUP | POLLERR))) {
            ssize_t n = ::read(0, buf, sizeof buf);
            if (n > 0) to_worker.assign(buf, static_cast<std::size_t>(n));
            else if (n == 0 || errno != EINTR) {
                stdin_open = false;
                ::shutdown(worker, SHUT_WR);
            }
        }
        if (rc > 0 && (fds[1].revents & POLLOUT) && !to_worker.empty()) {
            ssize_t n = ::send(worker, to_worker.data(), to_worker.size(), MSG_NOSIGNAL);
            if (n > 0) to_worker.erase(0, static_cast<std::size_t>(n));
            else if (n < 0 && errno != EAGAIN && errno != EINTR) { // the worker stopped reading
                to_worker.clear();
                stdin_open = false;
            }
        }
        if (rc > 0 && (fds[1].revents & (POLLIN | POLLHUP | POLLERR))) {
            ssize_t n = ::read(worker, buf, sizeof buf);
            if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) break;
            if (n > 0) {
                try {
                    write_all(1, buf, static_cast<std::size_t>(n));
                } catch (const std::system_error&) {
                    break; // nobody reads our stdout any more
                }
            }
        }
        keeper.tick(rc > 0 && (fds[2].revents & (POLLIN | POLLHUP | POLLERR)));
    }
    keeper.finish();
    return exit_ok;
}

int cmd_lease(std::vector<std::string> args, const std::optional<std::vector<std::string>>& cmd, Common& common) {
    auto desc = command_options("Options");
    desc.add_options()("protocol", po::value<std::string>()->required(), "the pool to lease from")(
        "user", po::value<std::string>(), "lease for this user (per_user pools)")(
        "ttl-ms", po::value<std::uint64_t>(), "ask for this ttl (100 .. the pool's lease_ttl_ms)")(
        "wait-ms", po::value<std::uint64_t>(), "wait this long for a worker (0: fail at once)")(
        "version", po::value<std::uint64_t>(), "the protocol version the pool must serve")(
        "detach", "without CMD: print the lease line and leave the lease to live on (until its ttl, "
                  "or `foremanctl release ID`); with CMD: detach=1, released when CMD ends");
    po::positional_options_description pos;
    pos.add("protocol", 1);
    auto vm = parse(args, desc, pos, "lease PROTOCOL [OPTIONS] [-- CMD [ARG...]]", common);
    if (!vm) return exit_ok;
    if (cmd && cmd->empty()) throw UsageError("lease: '--' must be followed by a command");

    client::LeaseOptions opt;
    if (vm->count("user")) opt.user = (*vm)["user"].as<std::string>();
    if (vm->count("ttl-ms")) opt.ttl_ms = (*vm)["ttl-ms"].as<std::uint64_t>();
    if (vm->count("wait-ms")) opt.wait_ms = (*vm)["wait-ms"].as<std::uint64_t>();
    if (vm->count("version")) opt.version = (*vm)["version"].as<std::uint64_t>();
    opt.detach = vm->count("detach") != 0;

    auto conn = connect(common);
    auto lease = conn.lease((*vm)["protocol"].as<std::string>(), opt);
    std::string line = "lease " + std::to_string(lease.id()) + " worker " + std::to_string(lease.worker_pid()) +
                       " ttl " + std::to_string(lease.ttl().count());
    if (cmd) return run_command(conn, lease, *cmd);
    if (opt.detach) {
        std::cout << line << std::endl;
        lease.forget();
        return exit_ok;
    }
    std::cerr << line << std::endl;
    return copy_stdio(conn, lease);
}

// ---- release, renew, register, unregister ----------------------------------------------

int cmd_id(const std::string& name, const std::vector<std::string>& args, Common& common) {
    auto desc = command_options("Options");
    desc.add_options()("id", po::value<std::string>()->required(), "the lease id");
    po::positional_options_description pos;
    pos.add("id", 1);
    auto vm = parse(args, desc, pos, name + " ID", common);
    if (!vm) return exit_ok;
    auto id = parse_id((*vm)["id"].as<std::string>());
    auto conn = connect(common);
    if (name == "release") conn.release(id);
    else {
        auto ttl = conn.renew(id);
        std::cout << "ttl " << ttl.count() << std::endl;
    }
    return exit_ok;
}

int cmd_register(const std::vector<std::string>& args, Common& common) {
    auto desc = command_options("Options");
    desc.add_options()("protocol", po::value<std::string>()->required(), "the pool's name")(
        "key", po::value<std::vector<std::string>>(), "KEY=VALUE, the [pool.NAME] keys of the configuration");
    po::positional_options_description pos;
    pos.add("protocol", 1).add("key", -1);
    auto vm = parse(args, desc, pos, "register PROTOCOL KEY=VALUE...", common);
    if (!vm) return exit_ok;
    std::vector<std::pair<std::string, std::string>> keys;
    if (vm->count("key"))
        for (const auto& kv : (*vm)["key"].as<std::vector<std::string>>()) {
            auto eq = kv.find('=');
            if (eq == std::string::npos || eq == 0) throw UsageError("register: '" + kv + "' is not KEY=VALUE");
            keys.emplace_back(kv.substr(0, eq), kv.substr(eq + 1));
        }
    if (keys.empty()) throw UsageError("register: give the pool's keys as KEY=VALUE (path=... at least)");
    auto conn = connect(common);
    conn.register_pool((*vm)["protocol"].as<std::string>(), keys);
    return exit_ok;
}

int cmd_unregister(const std::vector<std::string>& args, Common& common) {
    auto desc = command_options("Options");
    desc.add_options()("protocol", po::value<std::string>()->required(), "the pool's name");
    po::positional_options_description pos;
    pos.add("protocol", 1);
    auto vm = parse(args, desc, pos, "unregister PROTOCOL", common);
    if (!vm) return exit_ok;
    auto conn = connect(common);
    conn.unregister_pool((*vm)["protocol"].as<std::string>());
    return exit_ok;
}

int run(std::vector<std::string> args) {
    // Everything after the first "--" is lease's command.
    std::optional<std::vector<std::string>> cmd;
    if (auto dd = std::find(args.begin(), args.end(), "--"); dd != args.end()) {
        cmd.emplace(dd + 1, args.end());
        args.erase(dd, args.end());
    }
    Common common;
    std::size_t i = 0;
    for (; i < args.size() && args[i].size() > 1 && args[i][0] == '-'; ++i) {
        const std::string& a = args[i];
        if (a == "-h" || a == "--help") {
            std::cout << main_usage;
            return exit_ok;
        } else if (a == "--socket") {
            if (++i == args.size()) throw UsageError("--socket needs a path");
            common.socket = args[i];
        } else if (a.rfind("--socket=", 0) == 0) {
            common.socket = a.substr(9);
        } else {
            throw UsageError("unknown option '" + a + "'");
        }
    }
    if (i == args.size()) throw UsageError("no command given");
    std::string command = args[i];
    std::vector<std::string> rest(args.begin() + static_cast<std::ptrdiff_t>(i) + 1, args.end());
    if (cmd && command != "lease") throw UsageError("'--' is only for lease");
    if (command == "status") return cmd_status(rest, common);
    if (command == "lease") return cmd_lease(rest, cmd, common);
    if (command == "release" || command == "renew") return cmd_id(command, rest, common);
    if (command == "register") return cmd_register(rest, common);
    if (command == "unregister") return cmd_unregister(rest, common);
    if (command == "help") {
        std::cout << main_usage;
        return exit_ok;
    }
    throw UsageError("unknown command '" + command + "'");
}

} // namespace

int main(int argc, char** argv) {
    // Writes to a closed stdout or socket report EPIPE instead of killing us.
    std::signal(SIGPIPE, SIG_IGN);
    try {
        return run(std::vector<std::string>(argv + 1, argv + argc));
    } catch (const UsageError& e) {
        std::cerr << "foremanctl: " << e.what() << " (see foremanctl --help)" << std::endl;
        return exit_usage;
    } catch (const po::error& e) {
        std::cerr << "foremanctl: " << e.what() << " (see foremanctl --help)" << std::endl;
        return exit_usage;
    } catch (const std::invalid_argument& e) { // a field the protocol cannot carry (a tab, a newline)
        std::cerr << "foremanctl: " << e.what() << std::endl;
        return exit_usage;
    } catch (const Error& e) {
        std::cerr << "foremanctl: " << e.what() << std::endl;
        return e.kind() == Error::Kind::refused ? exit_refused : exit_unreachable;
    } catch (const std::exception& e) {
        std::cerr << "foremanctl: " << e.what() << std::endl;
        return exit_unreachable;
    }
}
