#include "broker_harness.hpp"

#include <catch2/catch.hpp>

#include <csignal>
#include <dirent.h>
#include <fcntl.h>
#include <fstream>
#include <poll.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace foreman::test {

std::string self_exe() {
    char buf[4096];
    ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
    REQUIRE(n > 0);
    return std::string(buf, static_cast<std::size_t>(n));
}

TempDir::TempDir() {
    char tmpl[] = "/tmp/foreman-test-XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    path_ = tmpl;
}

TempDir::~TempDir() {
    std::string cmd = "rm -rf '" + path_ + "'";
    [[maybe_unused]] int rc = std::system(cmd.c_str());
}

bool wait_pid_gone(int pid, std::chrono::milliseconds timeout) {
    int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
    if (fd < 0) return errno == ESRCH; // gone already
    pollfd p{fd, POLLIN, 0};
    int r = ::poll(&p, 1, static_cast<int>(timeout.count()));
    ::close(fd);
    return r == 1;
}

bool is_zombie(int pid) {
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    if (!std::getline(stat, line)) return false;
    auto close = line.rfind(')');
    return close != std::string::npos && close + 2 < line.size() && line[close + 2] == 'Z';
}

std::map<int, std::string> open_fds(int pid) {
    std::map<int, std::string> fds;
    std::string dir = "/proc/" + std::to_string(pid) + "/fd";
    DIR* d = ::opendir(dir.c_str());
    if (!d) return fds;
    while (dirent* e = ::readdir(d)) {
        if (e->d_name[0] == '.') continue;
        char target[512];
        std::string link = dir + "/" + e->d_name;
        ssize_t n = ::readlink(link.c_str(), target, sizeof target - 1);
        fds[std::atoi(e->d_name)] = n > 0 ? std::string(target, static_cast<std::size_t>(n)) : "?";
    }
    ::closedir(d);
    return fds;
}

namespace {

/// An unlinked temporary file for a child's output.
int capture_file() {
    char tmpl[] = "/tmp/foreman-out-XXXXXX";
    int fd = ::mkostemp(tmpl, O_CLOEXEC);
    REQUIRE(fd >= 0);
    ::unlink(tmpl);
    return fd;
}

std::string read_all(int fd) {
    std::string text;
    ::lseek(fd, 0, SEEK_SET);
    char buf[4096];
    for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) text.append(buf, static_cast<std::size_t>(n));
    return text;
}

} // namespace

ProcessResult run_process(const std::vector<std::string>& argv, const std::string& input,
                          const std::vector<std::string>& env, std::chrono::milliseconds timeout) {
    // Everything the child needs is built before fork: after it, only
    // async-signal-safe calls (the test process has threads).
    std::vector<std::string> envs;
    for (char** e = environ; *e; ++e)
        if (std::string_view(*e).rfind("FOREMAN_SOCKET=", 0) != 0) envs.emplace_back(*e);
    envs.insert(envs.end(), env.begin(), env.end());
    std::vector<char*> argp, envp;
    for (auto& a : argv) argp.push_back(const_cast<char*>(a.c_str()));
    argp.push_back(nullptr);
    for (auto& e : envs) envp.push_back(const_cast<char*>(e.c_str()));
    envp.push_back(nullptr);

    int in[2];
    REQUIRE(::pipe2(in, O_CLOEXEC) == 0);
    REQUIRE(input.size() < 65536); // fits in the pipe: written before the child runs
    if (!input.empty()) REQUIRE(::write(in[1], input.data(), input.size()) == static_cast<ssize_t>(input.size()));
    ::close(in[1]);
    int out = capture_file(), err = capture_file();

    pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        ::dup2(in[0], 0);
        ::dup2(out, 1);
        ::dup2(err, 2);
        ::execve(argp[0], argp.data(), envp.data());
        ::_exit(127);
    }
    ::close(in[0]);
    ProcessResult r;
    if (!wait_pid_gone(pid, timeout)) {
        r.timed_out = true;
        ::kill(pid, SIGKILL);
    }
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    r.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    r.out = read_all(out);
    r.err = read_all(err);
    ::close(out);
    ::close(err);
    return r;
}

void TestClient::granted(lease::Ticket t, lease::LeaseId l, int pid, std::chrono::milliseconds ttl,
                         spawn::unique_fd conn) {
    std::lock_guard lock(mu_);
    granted_.emplace(t, Granted{t, l, pid, ttl, std::move(conn)});
    cv_.notify_all();
}

void TestClient::rejected(lease::Ticket t, protocol::FailCode code, const std::string& text) {
    std::lock_guard lock(mu_);
    rejected_.emplace(t, Rejected{t, code, text});
    cv_.notify_all();
}

void TestClient::expired(lease::LeaseId l, protocol::EndReason reason) {
    std::lock_guard lock(mu_);
    expired_.emplace(l, reason);
    cv_.notify_all();
}

std::optional<Granted> TestClient::wait_granted(lease::Ticket t, std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, timeout, [&] { return granted_.count(t) || rejected_.count(t); });
    auto it = granted_.find(t);
    if (it == granted_.end()) {
        auto r = rejected_.find(t);
        if (r != rejected_.end()) UNSCOPED_INFO("rejected: " << protocol::to_string(r->second.code) << " " << r->second.text);
        return std::nullopt;
    }
    Granted g = std::move(it->second);
    granted_.erase(it);
    return g;
}

std::optional<Rejected> TestClient::wait_rejected(lease::Ticket t, std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, timeout, [&] { return granted_.count(t) || rejected_.count(t); });
    auto it = rejected_.find(t);
    if (it == rejected_.end()) return std::nullopt;
    return it->second;
}

std::optional<protocol::EndReason> TestClient::wait_expired(lease::LeaseId l, std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, timeout, [&] { return expired_.count(l) != 0; });
    auto it = expired_.find(l);
    if (it == expired_.end()) return std::nullopt;
    return it->second;
}

BrokerHarness::BrokerHarness(std::string ini) {
    std::string self = self_exe();
    for (auto pos = ini.find("{self}"); pos != std::string::npos; pos = ini.find("{self}"))
        ini.replace(pos, 6, self);
    if (ini.find("runtime_dir") == std::string::npos) ini = "runtime_dir = " + runtime_dir() + "\n" + ini;
    std::string file = dir_.path() + "/foreman.conf";
    std::ofstream(file) << ini;
    broker::Config config = broker::load_config(file);
    broker::BrokerOptions options{file, {}, false, nullptr};
    options.observer = [this] {
        std::lock_guard lock(mu_);
        ++generation_;
        cv_.notify_all();
    };
    broker_ = std::make_unique<broker::Broker>(config, std::move(options));
    thread_ = std::thread([this] {
        broker_->run();
        std::lock_guard lock(mu_);
        run_returned_ = std::chrono::steady_clock::now();
        ++generation_;
        cv_.notify_all();
    });
}

BrokerHarness::~BrokerHarness() {
    if (!stopped_) stop();
    // The broker's process threads may still be calling the observer (a
    // worker's exit is handled after run() returned): the broker goes before
    // the mutex and condition variable the observer uses.
    broker_.reset();
}

std::chrono::milliseconds BrokerHarness::stop() {
    auto start = std::chrono::steady_clock::now();
    stopped_ = true;
    broker_->stop();
    thread_.join();
    return std::chrono::duration_cast<std::chrono::milliseconds>(run_returned_ - start);
}

bool BrokerHarness::wait_for(const std::function<bool(const lease::Snapshot&)>& pred,
                             std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        std::uint64_t seen;
        {
            std::lock_guard lock(mu_);
            seen = generation_;
        }
        if (pred(broker_->snapshot())) return true;
        std::unique_lock lock(mu_);
        if (!cv_.wait_until(lock, deadline, [&] { return generation_ != seen; })) return pred(broker_->snapshot());
    }
}

std::shared_ptr<TestClient> BrokerHarness::client() {
    auto c = std::make_shared<TestClient>();
    c->id = broker_->open_client(c);
    return c;
}

lease::Ticket BrokerHarness::ask(TestClient& client, const std::string& protocol, const std::string& user,
                                 std::optional<std::chrono::milliseconds> wait,
                                 std::optional<std::chrono::milliseconds> ttl) {
    lease::LeaseRequest rq;
    rq.ticket = next_ticket_++;
    rq.client = client.id;
    rq.uid = static_cast<lease::Uid>(::getuid());
    rq.protocol = protocol;
    rq.user = user;
    rq.wait = wait;
    rq.ttl = ttl;
    broker_->lease(rq);
    return rq.ticket;
}

Granted BrokerHarness::lease(TestClient& client, const std::string& protocol, const std::string& user) {
    auto g = client.wait_granted(ask(client, protocol, user));
    REQUIRE(g.has_value());
    return std::move(*g);
}

std::string echo_through(int fd, const std::string& text) {
    REQUIRE(::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()));
    std::string back;
    char buf[4096];
    while (back.size() < text.size()) {
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n <= 0) break;
        back.append(buf, static_cast<std::size_t>(n));
    }
    return back;
}

std::vector<lease::WorkerView> all_workers(const lease::Snapshot& s) {
    std::vector<lease::WorkerView> out;
    for (auto& p : s.pools) out.insert(out.end(), p.workers.begin(), p.workers.end());
    return out;
}

std::size_t count_state(const lease::Snapshot& s, const std::string& protocol, lease::WorkerState state) {
    std::size_t n = 0;
    for (auto& p : s.pools)
        if (p.protocol == protocol)
            for (auto& w : p.workers) n += w.state == state;
    return n;
}

std::string echo_worker() { return std::string(FOREMAN_BIN_DIR) + "/foreman-echo"; }

std::string control_socket(const BrokerHarness& h) { return h.runtime_dir() + "/foreman.sock"; }

} // namespace foreman::test
