// foreman-echo: the example worker. It echoes every byte of one connection at
// a time back to its sender, and speaks notify protocol "foreman": READY=1
// when listening and again after each connection ends (that ends the lease),
// WATCHDOG=1 while serving. With --warmup-us it also simulates per-user
// state: a connection may name its user first ("@user NAME"), and the first
// answer to a user it does not remember is delayed. See docs/echo-worker.md.
//
// Usage: foreman-echo [OPTIONS] [SOCKET]
//   With socket activation (LISTEN_FDS=1, LISTEN_PID=<pid>) it serves fd 3.
//   Otherwise it binds SOCKET, or $FOREMAN_SOCKET, itself (listen=path).

#include <systemd/sd-daemon.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <list>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>

#include <poll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

namespace {

using clock_type = std::chrono::steady_clock;

/// A fatal error: main() prints it as one line and exits 1.
struct fatal_error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

[[noreturn]] void fail_errno(std::string_view what) {
    throw fatal_error(std::string(what) + ": " + std::strerror(errno));
}

/// Owns one descriptor.
class fd_guard {
public:
    fd_guard() = default;
    explicit fd_guard(int fd) noexcept : fd_(fd) {}
    fd_guard(fd_guard&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
    fd_guard& operator=(fd_guard&& other) noexcept {
        if (this != &other) {
            close_now();
            fd_ = std::exchange(other.fd_, -1);
        }
        return *this;
    }
    fd_guard(const fd_guard&) = delete;
    fd_guard& operator=(const fd_guard&) = delete;
    ~fd_guard() { close_now(); }

    int get() const noexcept { return fd_; }
    void close_now() noexcept {
        if (fd_ >= 0) ::close(fd_);
        fd_ = -1;
    }

private:
    int fd_ = -1;
};

/// sd_notify() wrapper: a worker started without NOTIFY_SOCKET notifies no
/// one; a failure to send is reported once but is not fatal (if the broker is
/// gone, its death signal ends us anyway).
void notify(const char* state) {
    static bool warned = false;
    int r = sd_notify(0, state);
    if (r < 0 && !warned) {
        warned = true;
        std::fprintf(stderr, "foreman-echo: sd_notify failed: %s\n", std::strerror(-r));
    }
}

/// The socket path given on the command line, else $FOREMAN_SOCKET.
std::string socket_path_from(const std::optional<std::string>& socket_arg) {
    if (socket_arg) return *socket_arg;
    if (const char* env = std::getenv("FOREMAN_SOCKET"); env != nullptr && *env != '\0') return env;
    throw fatal_error("no listening socket: not socket-activated, and neither argv[1] nor FOREMAN_SOCKET names a path");
}

/// listen=path: bind `path` ourselves, replacing a stale socket file left by
/// a previous worker, but never a file of any other kind.
fd_guard bind_path(const std::string& path) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof addr.sun_path) throw fatal_error("socket path too long: " + path);
    std::memcpy(addr.sun_path, path.data(), path.size());

    struct stat st {};
    if (::lstat(path.c_str(), &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) throw fatal_error("refusing to replace non-socket file " + path);
        if (::unlink(path.c_str()) != 0) fail_errno("unlink " + path);
    } else if (errno != ENOENT) {
        fail_errno("stat " + path);
    }

    fd_guard fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (fd.get() < 0) fail_errno("socket");
    if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) fail_errno("bind " + path);
    if (::listen(fd.get(), SOMAXCONN) != 0) fail_errno("listen " + path);
    return fd;
}

/// The listening socket: fd 3 from socket activation, else one we bind.
/// `bound_path` is set when we bound it (so we remove it on exit).
fd_guard listening_socket(const std::optional<std::string>& socket_arg, std::optional<std::string>& bound_path,
                          bool& connected) {
    // A LISTEN_FDS meant for us but ignored (LISTEN_PID not our pid) would
    // make us bind FOREMAN_SOCKET over the broker's socket: say so instead.
    const char* listen_fds = std::getenv("LISTEN_FDS");
    bool activation_requested = listen_fds != nullptr && *listen_fds != '\0';
    // unset_environment=1: LISTEN_* describe this process only.
    int n = sd_listen_fds(1);
    if (n < 0) throw fatal_error(std::string("sd_listen_fds: ") + std::strerror(-n));
    if (n == 0 && activation_requested)
        throw fatal_error("LISTEN_FDS is set but LISTEN_PID is not this process's pid");
    if (n > 1) throw fatal_error("expected 1 activation socket, got " + std::to_string(n));
    if (n == 1) {
        int fd = SD_LISTEN_FDS_START;
        int r = sd_is_socket(fd, AF_UNIX, SOCK_STREAM, 1);
        if (r < 0) throw fatal_error(std::string("fd 3: ") + std::strerror(-r));
        if (r == 0) {
            // systemd-socket-activate --accept (inetd style): fd 3 is one
            // connection, served once.
            if (sd_is_socket(fd, AF_UNIX, SOCK_STREAM, 0) <= 0)
                throw fatal_error("fd 3 is not an AF_UNIX stream socket");
            connected = true;
        }
        return fd_guard(fd);
    }
    std::string path = socket_path_from(socket_arg);
    fd_guard fd = bind_path(path);
    bound_path = std::move(path);
    return fd;
}

/// SIGTERM and SIGINT arrive as readable data on a signalfd, so no code runs
/// in a signal handler and poll() sees them like any other event.
fd_guard termination_signals() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    if (sigprocmask(SIG_BLOCK, &set, nullptr) != 0) fail_errno("sigprocmask");
    fd_guard fd(::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK));
    if (fd.get() < 0) fail_errno("signalfd");
    return fd;
}

/// Heartbeats every WATCHDOG_USEC/2 while a connection is served; off when
/// the broker asked for none (WATCHDOG_USEC unset, or WATCHDOG_PID not ours).
class watchdog {
public:
    /// `every`, when given (--heartbeat-ms), replaces WATCHDOG_USEC/2: a
    /// benchmark sweeps the interval apart from the broker's timeout.
    explicit watchdog(std::optional<std::chrono::milliseconds> every) {
        uint64_t usec = 0;
        int r = sd_watchdog_enabled(0, &usec);
        if (r < 0) throw fatal_error(std::string("bad WATCHDOG_USEC: ") + std::strerror(-r));
        if (r > 0 && usec > 0) interval_ = std::chrono::microseconds(std::max<uint64_t>(usec / 2, 1));
        if (every && every->count() > 0) interval_ = *every;
    }

    /// Sends a heartbeat now and schedules the next one.
    void beat() {
        if (!interval_) return;
        notify("WATCHDOG=1");
        next_ = clock_type::now() + *interval_;
    }

    /// Sends a heartbeat if one is due; returns the poll() timeout until the
    /// next one, in milliseconds (-1 = wait forever).
    int beat_if_due() {
        if (!interval_) return -1;
        auto now = clock_type::now();
        if (now >= next_) beat();
        auto left = std::chrono::ceil<std::chrono::milliseconds>(next_ - clock_type::now());
        return static_cast<int>(std::max<std::chrono::milliseconds::rep>(left.count(), 0));
    }

private:
    std::optional<clock_type::duration> interval_;
    clock_type::time_point next_{};
};

enum class outcome { connection_ended, terminate };

/// Returns true when the signalfd reported SIGTERM or SIGINT.
bool termination_requested(int sig_fd) {
    signalfd_siginfo info{};
    bool any = false;
    while (::read(sig_fd, &info, sizeof info) == static_cast<ssize_t>(sizeof info)) any = true;
    return any;
}

/// The users whose state this worker holds, least recently served first
/// dropped: a worker keeps per-user state (a cache, a session) for a few
/// users only, so a pool whose workers cycle through many users keeps paying
/// warm-ups unless each user comes back to a worker that still holds it.
class user_memory {
public:
    explicit user_memory(std::size_t capacity) : capacity_(capacity) {}

    /// Whether `user` was held (it is now the most recently served), else
    /// it is taken in, dropping the least recently served beyond capacity.
    bool serve(const std::string& user) {
        if (auto it = where_.find(user); it != where_.end()) {
            order_.splice(order_.begin(), order_, it->second);
            return true;
        }
        order_.push_front(user);
        where_.emplace(user, order_.begin());
        if (order_.size() > capacity_) {
            where_.erase(order_.back());
            order_.pop_back();
        }
        return false;
    }

private:
    std::size_t capacity_;
    std::list<std::string> order_; ///< most recently served first
    std::unordered_map<std::string, std::list<std::string>::iterator> where_;
};

/// --warmup-us: what a connection costs when its user is not remembered.
struct warmup_policy {
    std::chrono::microseconds cost{0};
    user_memory users;
    std::string default_user; ///< $FOREMAN_USER (per_user pools): used without an @user line
};

constexpr std::string_view user_line_prefix = "@user ";
constexpr std::size_t max_user_name = 256;
constexpr std::string_view warm_answer = "@user warm\n";
constexpr std::string_view cold_answer = "@user cold\n";

/// The first bytes of a connection, when they may be an @user line.
struct greeting {
    enum class kind { need_more, none, user, bad };
    kind what = kind::need_more;
    std::string user;         ///< kind::user: the name
    std::size_t consumed = 0; ///< kind::user: bytes of the line, newline included
};

/// Classifies `bytes`, the start of a connection: an "@user NAME\n" line,
/// bytes that cannot begin one (plain echo), or too few bytes to tell.
/// A client that sends no @user line is answered as soon as its bytes
/// differ from the prefix, so plain echo clients never wait on this.
greeting parse_greeting(std::string_view bytes, bool eof) {
    std::size_t common = std::min(bytes.size(), user_line_prefix.size());
    if (bytes.substr(0, common) != user_line_prefix.substr(0, common)) return {greeting::kind::none, {}, 0};
    if (bytes.size() < user_line_prefix.size()) return {eof ? greeting::kind::none : greeting::kind::need_more, {}, 0};
    std::size_t nl = bytes.find('\n');
    if (nl == std::string_view::npos) {
        if (eof || bytes.size() > user_line_prefix.size() + max_user_name) return {greeting::kind::bad, {}, 0};
        return {greeting::kind::need_more, {}, 0};
    }
    std::string_view name = bytes.substr(user_line_prefix.size(), nl - user_line_prefix.size());
    bool printable = std::all_of(name.begin(), name.end(), [](char c) { return c > ' ' && c != 127; });
    if (name.empty() || name.size() > max_user_name || !printable) return {greeting::kind::bad, {}, 0};
    return {greeting::kind::user, std::string(name), nl + 1};
}

/// The simulated warm-up: a sleep (ppoll on the signalfd, so SIGTERM still
/// ends it at once, with heartbeats kept up), not a CPU burn: it stands for
/// loading a user's state from elsewhere, and on a small shared machine a
/// burn would also slow the broker and the other workers, mixing CPU
/// contention into what affinity saves. False when SIGTERM/SIGINT came first.
bool warm_up(std::chrono::microseconds cost, int sig_fd, watchdog& dog) {
    auto deadline = clock_type::now() + cost;
    for (;;) {
        auto now = clock_type::now();
        if (now >= deadline) return true;
        auto left = std::chrono::duration_cast<std::chrono::nanoseconds>(deadline - now);
        int beat_ms = dog.beat_if_due();
        if (beat_ms >= 0) left = std::min<std::chrono::nanoseconds>(left, std::chrono::milliseconds(beat_ms));
        timespec ts{static_cast<time_t>(left.count() / 1000000000), static_cast<long>(left.count() % 1000000000)};
        pollfd fd{sig_fd, POLLIN, 0};
        int r = ::ppoll(&fd, 1, &ts, nullptr);
        if (r < 0 && errno != EINTR) fail_errno("ppoll");
        if (r > 0 && termination_requested(sig_fd)) return false;
    }
}

/// Echoes `conn` until the peer's EOF (after the echoed bytes are flushed),
/// an error on the connection, or a termination signal. With `warmup`, the
/// connection's first bytes are looked at first (parse_greeting): an @user
/// line is answered "@user warm" or "@user cold" instead of echoed, and a
/// user not remembered costs the warm-up before the first answer.
outcome serve(int conn, int sig_fd, watchdog& dog, warmup_policy* warmup) {
    std::array<char, 64 * 1024> buf{};
    std::size_t pending = 0; // bytes read but not yet written back
    std::size_t sent = 0;    // of those, already written
    bool peer_eof = false;
    bool greeting_open = warmup != nullptr; // still reading the first bytes

    dog.beat();
    for (;;) {
        if (peer_eof && pending == 0) return outcome::connection_ended;

        // Read only when the buffer is empty (or a greeting is incomplete): a
        // client that stops reading stops being read (backpressure) but still
        // gets heartbeats.
        bool writing = pending > 0 && !greeting_open;
        std::array<pollfd, 2> fds{{
            {conn, static_cast<short>(writing ? POLLOUT : POLLIN), 0},
            {sig_fd, POLLIN, 0},
        }};
        int timeout = dog.beat_if_due();
        int r = ::poll(fds.data(), fds.size(), timeout);
        if (r < 0) {
            if (errno == EINTR) continue;
            fail_errno("poll");
        }
        if ((fds[1].revents & POLLIN) && termination_requested(sig_fd)) return outcome::terminate;
        if (fds[0].revents == 0) continue;

        if (writing) {
            ssize_t n = ::send(conn, buf.data() + sent, pending - sent, MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EAGAIN || errno == EINTR) continue;
                return outcome::connection_ended; // EPIPE, ECONNRESET: the client left
            }
            sent += static_cast<std::size_t>(n);
            if (sent == pending) pending = sent = 0;
        } else {
            // While the greeting is open, leave room for the answer that replaces it.
            std::size_t room = buf.size() - pending - (greeting_open ? cold_answer.size() : 0);
            ssize_t n = ::recv(conn, buf.data() + pending, room, 0);
            if (n < 0) {
                if (errno == EAGAIN || errno == EINTR) continue;
                return outcome::connection_ended;
            }
            if (n == 0) peer_eof = true;
            pending += static_cast<std::size_t>(n);
            if (!greeting_open) continue;
            greeting g = parse_greeting(std::string_view(buf.data(), pending), peer_eof);
            if (g.what == greeting::kind::need_more) continue;
            greeting_open = false;
            if (g.what == greeting::kind::bad) {
                constexpr std::string_view refusal = "@error bad @user line\n";
                [[maybe_unused]] ssize_t w = ::send(conn, refusal.data(), refusal.size(), MSG_NOSIGNAL);
                return outcome::connection_ended;
            }
            const std::string& user = g.what == greeting::kind::user ? g.user : warmup->default_user;
            // A connection closed before sending anything asks nothing: no warm-up.
            bool warm = user.empty() || pending == 0 || warmup->users.serve(user);
            if (!warm && !warm_up(warmup->cost, sig_fd, dog)) return outcome::terminate;
            if (g.what == greeting::kind::user) {
                // The answer takes the line's place; the bytes after it are echoed.
                std::string_view answer = warm ? warm_answer : cold_answer;
                std::memmove(buf.data() + answer.size(), buf.data() + g.consumed, pending - g.consumed);
                std::memcpy(buf.data(), answer.data(), answer.size());
                pending = pending - g.consumed + answer.size();
            }
        }
    }
}

/// Accepts one connection at a time until SIGTERM/SIGINT.
void run(int listen_fd, int sig_fd, watchdog& dog, warmup_policy* warmup) {
    notify("READY=1\nSTATUS=idle");
    for (;;) {
        std::array<pollfd, 2> fds{{{listen_fd, POLLIN, 0}, {sig_fd, POLLIN, 0}}};
        if (::poll(fds.data(), fds.size(), -1) < 0) {
            if (errno == EINTR) continue;
            fail_errno("poll");
        }
        if ((fds[1].revents & POLLIN) && termination_requested(sig_fd)) break;
        if ((fds[0].revents & (POLLERR | POLLNVAL)) != 0) throw fatal_error("listening socket failed");
        if ((fds[0].revents & POLLIN) == 0) continue;

        fd_guard conn(::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
        if (conn.get() < 0) {
            // The peer may have gone between poll() and accept4(): not our error.
            if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED || errno == EPROTO) continue;
            fail_errno("accept4");
        }
        notify("STATUS=serving");
        outcome result = serve(conn.get(), sig_fd, dog, warmup);
        conn.close_now();
        if (result == outcome::terminate) break;
        // With notify=foreman this READY=1 tells the broker the lease is done.
        notify("READY=1\nSTATUS=idle");
    }
    notify("STOPPING=1");
}

/// Removes the socket file we bound, unless someone has replaced it since.
class bound_socket_file {
public:
    explicit bound_socket_file(std::optional<std::string> path) : path_(std::move(path)) {
        struct stat st {};
        if (path_ && ::lstat(path_->c_str(), &st) == 0) identity_ = {st.st_dev, st.st_ino};
    }
    bound_socket_file(const bound_socket_file&) = delete;
    bound_socket_file& operator=(const bound_socket_file&) = delete;
    ~bound_socket_file() {
        struct stat st {};
        if (path_ && identity_ && ::lstat(path_->c_str(), &st) == 0 &&
            std::pair{st.st_dev, st.st_ino} == *identity_)
            ::unlink(path_->c_str());
    }

private:
    std::optional<std::string> path_;
    std::optional<std::pair<dev_t, ino_t>> identity_;
};

} // namespace

const char* const usage =
    "usage: foreman-echo [--heartbeat-ms N] [--warmup-us N [--remember N]] [--stdio] [SOCKET]\n"
    "Echoes each connection back to its sender. Serves fd 3 when socket-activated\n"
    "(LISTEN_FDS/LISTEN_PID; a connected fd 3, as systemd-socket-activate --accept\n"
    "passes, is served once), else binds SOCKET or $FOREMAN_SOCKET.\n"
    "  --stdio          serve the one connection on stdin/stdout (s6-ipcserver, inetd)\n"
    "  --heartbeat-ms N WATCHDOG=1 every N ms while serving (default WATCHDOG_USEC/2)\n"
    "  --warmup-us N    simulate per-user state: a connection may begin with \"@user NAME\\n\"\n"
    "                   (else the user is $FOREMAN_USER, if set); it is answered \"@user warm\\n\"\n"
    "                   or, after sleeping N us for a user not remembered, \"@user cold\\n\"\n"
    "  --remember N     users whose state is kept, least recently served dropped (default 64)\n";

/// A positive (or, with `allow_zero`, non-negative) decimal argument, else nullopt.
std::optional<long> count_arg(const char* text, bool allow_zero) {
    char* end = nullptr;
    errno = 0;
    long n = std::strtol(text, &end, 10);
    if (end == text || *end != '\0' || errno != 0 || n < 0 || (n == 0 && !allow_zero)) return std::nullopt;
    return n;
}

int main(int argc, char** argv) {
    std::optional<std::string> socket_arg;
    std::optional<std::chrono::milliseconds> heartbeat;
    std::optional<std::chrono::microseconds> warmup_cost;
    long remember = 64;
    bool stdio = false;
    for (int i = 1; i < argc; ++i) {
        std::string_view a = argv[i];
        if (a == "-h" || a == "--help") {
            std::fputs(usage, stdout);
            return 0;
        }
        if (a == "--stdio") {
            stdio = true;
        } else if ((a == "--heartbeat-ms" || a == "--warmup-us" || a == "--remember") && i + 1 < argc) {
            auto n = count_arg(argv[++i], a == "--warmup-us");
            if (!n) {
                std::fprintf(stderr, "foreman-echo: %s needs a %s number, not '%s'\n", argv[i - 1],
                             a == "--warmup-us" ? "non-negative" : "positive", argv[i]);
                std::fputs(usage, stderr);
                return 2;
            }
            if (a == "--heartbeat-ms") heartbeat = std::chrono::milliseconds(*n);
            else if (a == "--warmup-us") warmup_cost = std::chrono::microseconds(*n);
            else remember = *n;
        } else if (!a.empty() && a[0] != '-' && !socket_arg) {
            socket_arg = std::string(a);
        } else {
            std::fputs(usage, stderr);
            return 2;
        }
    }
    try {
        fd_guard sig_fd = termination_signals();
        watchdog dog(heartbeat);
        std::optional<warmup_policy> warmup;
        if (warmup_cost) {
            const char* user = std::getenv("FOREMAN_USER");
            warmup.emplace(warmup_policy{*warmup_cost, user_memory(static_cast<std::size_t>(remember)),
                                         user != nullptr ? user : ""});
        }
        warmup_policy* policy = warmup ? &*warmup : nullptr;
        if (stdio) {
            serve(STDIN_FILENO, sig_fd.get(), dog, policy);
            return 0;
        }
        std::optional<std::string> bound_path;
        bool connected = false;
        fd_guard listen_fd = listening_socket(socket_arg, bound_path, connected);
        if (connected) {
            serve(listen_fd.get(), sig_fd.get(), dog, policy);
            return 0;
        }
        bound_socket_file cleanup(std::move(bound_path));
        run(listen_fd.get(), sig_fd.get(), dog, policy);
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "foreman-echo: %s\n", e.what());
        return 1;
    }
}
