// Security (issue 6): the control socket's mode from its first moment, who
// may act on a lease, who a run_as={user} worker runs as, and which
// descriptors a worker holds. Tests that switch uids need root: they are
// tagged [root] and say why they skip otherwise.

#include "broker_harness.hpp"
#include "client/connection.hpp"
#include "raw_control.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <dirent.h>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <sys/socket.h>
#include <sys/un.h>
#include <thread>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <set>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

using namespace foreman;
using namespace foreman::test;
using client::Connection;
using client::Error;
using client::LeaseOptions;
using lease::WorkerState;
using protocol::FailCode;

namespace {


bool is_root() { return ::geteuid() == 0; }

/// Matches a client::Error that is a FAIL with `code`.
class IsFail : public Catch::MatcherBase<Error> {
public:
    explicit IsFail(FailCode code) : code_(code) {}
    bool match(const Error& e) const override { return e.is(code_); }
    std::string describe() const override { return "is FAIL " + std::string(protocol::to_string(code_)); }

private:
    FailCode code_;
};

LeaseOptions as_user(const std::string& user) {
    LeaseOptions o;
    o.user = user;
    return o;
}

LeaseOptions detached() {
    LeaseOptions o;
    o.detach = true;
    return o;
}

/// What a FAIL said, for comparing two refusals.
std::string fail_text(const std::function<void()>& request) {
    try {
        request();
    } catch (const Error& e) {
        return e.what();
    }
    return "(no FAIL)";
}

bool leased_with(const lease::Snapshot& s, int pid, std::uint64_t lease_id) {
    for (auto& w : all_workers(s))
        if (w.pid == pid) return w.state == WorkerState::leased && w.lease && w.lease->id == lease_id;
    return false;
}

/// The "Uid:", "Gid:" or "Groups:" line of /proc/<pid>/status, split.
std::vector<long> status_ids(int pid, const std::string& key) {
    std::ifstream f("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    std::vector<long> ids;
    while (std::getline(f, line)) {
        if (line.rfind(key + ":", 0) != 0) continue;
        std::istringstream in(line.substr(key.size() + 1));
        for (long id; in >> id;) ids.push_back(id);
    }
    return ids;
}

/// sd_notify() holds a socket of its own for a moment: the descriptors of
/// `pid` once it holds `n`.
std::map<int, std::string> settled_fds(int pid, std::size_t n) {
    auto fds = open_fds(pid);
    for (int i = 0; i < 500 && fds.size() != n; ++i) {
        ::usleep(2000);
        fds = open_fds(pid);
    }
    return fds;
}

} // namespace

// ---- the control socket's mode ---------------------------------------------------------

namespace {

/// Watches a folder with inotify from a thread of its own, and stats each
/// name at each event: what was there, and with which mode, at the moment
/// the event was read.
class FolderWatch {
public:
    struct Seen {
        std::string name;
        std::uint32_t mask;
        bool exists;
        mode_t mode; ///< st_mode, type included
    };

    explicit FolderWatch(std::string dir) : dir_(std::move(dir)) {
        inotify_.reset(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
        REQUIRE(inotify_.get() >= 0);
        REQUIRE(::inotify_add_watch(inotify_.get(), dir_.c_str(), IN_CREATE | IN_ATTRIB | IN_MOVED_TO) >= 0);
        stop_.reset(::eventfd(0, EFD_CLOEXEC));
        REQUIRE(stop_.get() >= 0);
        thread_ = std::thread([this] { run(); });
    }
    ~FolderWatch() { stop(); }

    /// Stops watching once every event so far is read.
    std::vector<Seen> stop() {
        if (thread_.joinable()) {
            std::uint64_t one = 1;
            [[maybe_unused]] auto n = ::write(stop_.get(), &one, sizeof one);
            thread_.join();
        }
        return seen_;
    }

private:
    void run() {
        for (;;) {
            pollfd p[2] = {{inotify_.get(), POLLIN, 0}, {stop_.get(), POLLIN, 0}};
            ::poll(p, 2, -1);
            bool stopping = p[1].revents != 0;
            drain();
            if (stopping) return;
        }
    }

    void drain() {
        alignas(inotify_event) char buf[8192];
        for (ssize_t n; (n = ::read(inotify_.get(), buf, sizeof buf)) > 0;) {
            for (char* p = buf; p < buf + n;) {
                auto* e = reinterpret_cast<inotify_event*>(p);
                p += sizeof(inotify_event) + e->len;
                if (e->len == 0) continue;
                std::string name = e->name;
                struct stat st {};
                bool exists = ::lstat((dir_ + "/" + name).c_str(), &st) == 0;
                seen_.push_back(Seen{name, e->mask, exists, st.st_mode});
            }
        }
    }

    std::string dir_;
    spawn::unique_fd inotify_, stop_;
    std::thread thread_;
    std::vector<Seen> seen_;
};

} // namespace

TEST_CASE("the control socket never exists with wider permissions than control_socket_mode, not even for a moment",
          "[security][socket]") {
    const mode_t mode = GENERATE(mode_t{0600}, mode_t{0660}, mode_t{0666});
    INFO("control_socket_mode " << std::oct << mode);
    TempDir dir;
    std::string sock = dir.path() + "/foreman.sock";
    // A stale socket there too: it is replaced, never chmod-ed in place.
    auto with_stale = GENERATE(false, true);
    if (with_stale) {
        spawn::unique_fd stale(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        std::strcpy(addr.sun_path, sock.c_str());
        REQUIRE(::bind(stale.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
        REQUIRE(::chmod(sock.c_str(), 0777) == 0);
    }
    FolderWatch watch(dir.path());
    char octal[8];
    std::snprintf(octal, sizeof octal, "%04o", static_cast<unsigned>(mode));
    BrokerHarness h("control_socket = " + sock + "\ncontrol_socket_mode = " + octal + "\n[pool.echo]\npath = " +
                    echo_worker() + "\n");
    auto c = Connection::connect(sock); // it listens
    auto seen = watch.stop();

    struct stat st {};
    REQUIRE(::stat(sock.c_str(), &st) == 0);
    CHECK(S_ISSOCK(st.st_mode));
    CHECK((st.st_mode & 07777) == mode);
    bool appeared = false;
    for (auto& s : seen) {
        INFO("event " << std::hex << s.mask << std::dec << " on " << s.name << ", mode " << std::oct
                      << (s.mode & 07777) << (s.exists ? "" : " (gone)"));
        if (s.name == "foreman.sock") {
            // It appears whole, by rename: never created or chmod-ed at its name.
            CHECK(s.mask == IN_MOVED_TO);
            appeared = appeared || s.mask == IN_MOVED_TO;
        }
        if (!s.exists) continue;
        if (S_ISSOCK(s.mode)) CHECK((s.mode & 07777 & ~mode) == 0);
        if (S_ISDIR(s.mode)) CHECK((s.mode & 077) == 0); // where it was bound: ours alone
    }
    CHECK(appeared);
    // Nothing is left behind where it was bound.
    std::vector<std::string> left;
    DIR* d = ::opendir(dir.path().c_str());
    REQUIRE(d != nullptr);
    while (dirent* e = ::readdir(d))
        if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0)
            left.push_back(e->d_name);
    ::closedir(d);
    CHECK(left == std::vector<std::string>{"foreman.sock"});
}

// ---- who may act on a lease ---------------------------------------------------------------

TEST_CASE("a lease id alone lets no other connection, of the same or another uid, renew or release a lease",
          "[security][ownership][root]") {
    if (!is_root()) {
        WARN("skipped: not root, cannot connect as another uid");
        return;
    }
    OpenDir open;
    BrokerHarness h(open.ini() + "[pool.one]\npath = " + echo_worker() + "\nmax_instances = 2\nmin_idle = 2\n");
    auto mine = Connection::connect(open.socket());
    auto theirs = Connection::adopt(connect_as(nobody_uid, open.socket()));
    auto my_other = Connection::connect(open.socket());
    auto their_other = Connection::adopt(connect_as(nobody_uid, open.socket()));
    auto a = mine.lease("one");   // root's, not detached
    auto b = theirs.lease("one"); // nobody's, not detached
    const std::uint64_t unknown = b.id() + 1000;

    // The refusal says nothing a stranger could tell from an unknown id.
    auto same_as_unknown = [&](Connection& c, std::uint64_t id) {
        std::string text = fail_text([&] { c.renew(id); });
        std::string ref = fail_text([&] { c.renew(unknown); });
        const std::string from = std::to_string(unknown), to = std::to_string(id);
        REQUIRE(ref.find(from) != std::string::npos);
        for (auto pos = ref.find(from); pos != std::string::npos; pos = ref.find(from, pos + to.size()))
            ref.replace(pos, from.size(), to);
        CHECK(text == ref);
    };
    for (Connection* c : {&theirs, &their_other, &my_other}) {
        CHECK_THROWS_MATCHES(c->renew(a.id()), Error, IsFail(FailCode::no_such_lease));
        CHECK_THROWS_MATCHES(c->release(a.id()), Error, IsFail(FailCode::no_such_lease));
        same_as_unknown(*c, a.id());
    }
    for (Connection* c : {&mine, &my_other, &their_other}) {
        CHECK_THROWS_MATCHES(c->renew(b.id()), Error, IsFail(FailCode::no_such_lease));
        CHECK_THROWS_MATCHES(c->release(b.id()), Error, IsFail(FailCode::no_such_lease));
        same_as_unknown(*c, b.id());
    }
    auto s = h.snapshot();
    CHECK(leased_with(s, a.worker_pid(), a.id()));
    CHECK(leased_with(s, b.worker_pid(), b.id()));
    CHECK(a.renew() > 0ms);
    CHECK(b.renew() > 0ms);
    a.release();
    b.release();
}

TEST_CASE("a detached lease of another uid is not renewable or releasable, its own uid's is", "[security][ownership][root]") {
    if (!is_root()) {
        WARN("skipped: not root, cannot connect as another uid");
        return;
    }
    OpenDir open;
    BrokerHarness h(open.ini() + "[pool.one]\npath = " + echo_worker() + "\nmax_instances = 1\n");
    std::uint64_t id = 0;
    int pid = 0;
    {
        auto theirs = Connection::adopt(connect_as(nobody_uid, open.socket()));
        auto l = theirs.lease("one", detached());
        id = l.id();
        pid = l.worker_pid();
        l.forget();
    } // nobody hangs up; the detached lease lives on
    auto root = Connection::connect(open.socket());
    CHECK_THROWS_MATCHES(root.renew(id), Error, IsFail(FailCode::no_such_lease));
    CHECK_THROWS_MATCHES(root.release(id), Error, IsFail(FailCode::no_such_lease));
    CHECK(leased_with(h.snapshot(), pid, id));
    auto theirs_again = Connection::adopt(connect_as(nobody_uid, open.socket()));
    CHECK(theirs_again.renew(id) > 0ms);
    theirs_again.release(id);
    CHECK(h.wait_for([&](auto& s) { return !leased_with(s, pid, id); }));
}

// ---- run_as = {user} --------------------------------------------------------------------

TEST_CASE("a LEASE's user= does not choose whom a run_as={user} worker runs as, unless the peer is root",
          "[security][run-as][root]") {
    if (!is_root()) {
        WARN("skipped: not root, run_as is only used by a root broker");
        return;
    }
    OpenDir open;
    BrokerHarness h(open.ini() + "[pool.own]\npath = {self}\nargs = worker echo\nper_user = yes\nrun_as = {user}\n"
                                 "max_instances_per_user = 2\nnotify = none\n");
    auto nobody = Connection::adopt(connect_as(nobody_uid, open.socket()));
    for (const char* other : {"daemon", "1", "root", "0", "no-such-user"}) {
        INFO("nobody leases as user=" << other);
        try {
            nobody.lease("own", as_user(other));
            FAIL("granted");
        } catch (const Error& e) {
            CHECK(e.is(FailCode::denied));
            CHECK_THAT(e.what(), Catch::Contains("uid 65534 may not lease for user " + std::string(other)));
        }
    }
    CHECK(h.snapshot().workers_total == 0); // nothing was started for them
    for (const char* self : {"nobody", "65534"}) {
        auto l = nobody.lease("own", as_user(self));
        CHECK(status_ids(l.worker_pid(), "Uid") == std::vector<long>(4, 65534));
        l.release();
    }
    // root leases for anyone.
    auto root = Connection::connect(open.socket());
    auto d = root.lease("own", as_user("daemon"));
    CHECK(status_ids(d.worker_pid(), "Uid") == std::vector<long>(4, 1));
    d.release();
}

TEST_CASE("a peer that a run_as={user} pool's allow_users lists may lease for any user, as a mail front end does",
          "[security][run-as][root]") {
    if (!is_root()) {
        WARN("skipped: not root, run_as is only used by a root broker");
        return;
    }
    OpenDir open;
    BrokerHarness h(open.ini() + "[pool.front]\npath = {self}\nargs = worker echo\nper_user = yes\n"
                                 "run_as = {user}\nallow_users = nobody\nnotify = none\n");
    auto nobody = Connection::adopt(connect_as(nobody_uid, open.socket()));
    auto l = nobody.lease("front", as_user("daemon"));
    CHECK(status_ids(l.worker_pid(), "Uid") == std::vector<long>(4, 1));
    l.release();
    // Still never root without allow_root.
    try {
        nobody.lease("front", as_user("root"));
        FAIL("granted");
    } catch (const Error& e) {
        CHECK(e.is(FailCode::denied));
        CHECK_THAT(e.what(), Catch::Contains("'root' is root; set allow_root=yes"));
    }
}

// ---- workers and the broker's descriptors ----------------------------------------------------

TEST_CASE("a worker holds no descriptor of the broker's: not its sockets, clients' connections or other workers'",
          "[security][workers]") {
    BrokerHarness h("[pool.one]\npath = {self}\nargs = worker echo\nmin_idle = 1\n"
                    "[pool.two]\npath = {self}\nargs = worker echo\n");
    REQUIRE(h.wait_for([](auto& s) { return count_state(s, "one", WorkerState::idle) == 1; }));
    // Connections open while the second worker starts: a client's, and a
    // worker connection handed over and held.
    auto c1 = Connection::connect(h.runtime_dir() + "/foreman.sock");
    auto c2 = Connection::connect(h.runtime_dir() + "/foreman.sock");
    auto first = c1.lease("one");
    auto second = c2.lease("two");
    CHECK(echo_through(second.fd(), "x\n") == "x\n");

    // The broker runs in this process: its descriptors are among ours.
    auto broker_sockets = socket_targets(::getpid());
    std::set<std::string> mine(broker_sockets.begin(), broker_sockets.end());
    std::map<int, std::set<std::string>> worker_fds; // pid → its sockets and pipes
    for (int pid : {first.worker_pid(), second.worker_pid()}) {
        INFO("worker " << pid);
        auto fds = settled_fds(pid, 5);
        std::set<std::string> targets;
        for (auto& [fd, target] : fds) {
            INFO("fd " << fd << " -> " << target);
            // fd 0 /dev/null, 1 and 2 its output pipe, 3 its socket, and
            // the connection it accepted (while leased).
            CHECK(fd <= 4);
            if (target.rfind("socket:", 0) == 0) CHECK(mine.count(target) == 0);
            if (target.rfind("socket:", 0) == 0 || target.rfind("pipe:", 0) == 0) targets.insert(target);
        }
        worker_fds[pid] = targets;
    }
    // And none of another worker's.
    auto& a = worker_fds[first.worker_pid()];
    auto& b = worker_fds[second.worker_pid()];
    for (auto& t : a) CHECK(b.count(t) == 0);
}
