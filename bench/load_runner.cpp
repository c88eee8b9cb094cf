#include "bench/load_runner.hpp"

#include "bench/zipf.hpp"

#include "broker/unix_socket.hpp"
#include "client/connection.hpp"
#include "protocol/control_line.hpp"

#include <atomic>
#include <cstring>
#include <mutex>
#include <optional>
#include <random>
#include <stdexcept>
#include <thread>
#include <unistd.h>
#include <unordered_map>
#include <vector>

namespace foreman::bench {

using Clock = std::chrono::steady_clock;

std::uint64_t LoadResult::error_count() const {
    std::uint64_t n = 0;
    for (auto& [code, count] : errors) n += count;
    return n;
}

double LoadResult::hit_percent() const {
    std::uint64_t leases = affinity_hits + affinity_misses;
    return leases > 0 ? 100.0 * static_cast<double>(affinity_hits) / static_cast<double>(leases) : 0;
}

void LoadResult::merge(const LoadResult& other) {
    lease_wait.merge(other.lease_wait);
    cycle.merge(other.cycle);
    cycles += other.cycles;
    seconds += other.seconds;
    expiries += other.expiries;
    for (auto& [code, n] : other.errors) errors[code] += n;
    affinity_hits += other.affinity_hits;
    affinity_misses += other.affinity_misses;
    first_answer_hit.merge(other.first_answer_hit);
    first_answer_miss.merge(other.first_answer_miss);
    cold += other.cold;
}

namespace {

std::uint64_t ns_since(Clock::time_point t0) {
    return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count());
}

} // namespace

bool echo_round_trip(int fd, const std::vector<char>& out, std::vector<char>& in) {
    std::size_t sent = 0;
    while (sent < out.size()) {
        ssize_t n = ::write(fd, out.data() + sent, out.size() - sent);
        if (n <= 0) return false;
        sent += static_cast<std::size_t>(n);
    }
    std::size_t got = 0;
    while (got < out.size()) {
        ssize_t n = ::read(fd, in.data() + got, in.size() - got);
        if (n <= 0) return false;
        got += static_cast<std::size_t>(n);
    }
    return std::memcmp(out.data(), in.data(), out.size()) == 0;
}

namespace {

/// What one client thread measured.
struct ClientTally {
    Histogram lease_wait;
    Histogram cycle;
    std::uint64_t cycles = 0;
    std::uint64_t expiries = 0;
    std::map<std::string, std::uint64_t> errors;
    std::uint64_t affinity_hits = 0;
    std::uint64_t affinity_misses = 0;
    Histogram first_answer_hit;
    Histogram first_answer_miss;
    std::uint64_t cold = 0;
};

/// Sends "@user NAME\n" on a worker connection and reads its answer line:
/// true for "@user cold\n", false for "@user warm\n", nullopt otherwise.
/// It reads up to the newline, not a fixed size, so a worker without
/// --warmup-us (which echoes the line back) is an error, not a hang.
std::optional<bool> greet(int fd, const std::string& line) {
    if (::write(fd, line.data(), line.size()) != static_cast<ssize_t>(line.size())) return std::nullopt;
    std::string answer;
    char buf[512];
    while (answer.find('\n') == std::string::npos && answer.size() <= line.size() + 16) {
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n <= 0) return std::nullopt;
        answer.append(buf, static_cast<std::size_t>(n));
    }
    if (answer == "@user cold\n") return true;
    if (answer == "@user warm\n") return false;
    return std::nullopt;
}

/// Each cycle's user (UserChoice), as an index into the names: 0 is none.
class UserPicker {
public:
    UserPicker(const LoadOptions& o, int client)
        : choice_(o.user_choice), client_(client), random_(o.user_choice.seed + static_cast<std::uint64_t>(client)) {
        if (choice_.users > 0 && !choice_.one_per_client) zipf_.emplace(choice_.users, choice_.zipf_s);
    }
    int next() {
        if (choice_.users <= 0) return 0;
        if (choice_.one_per_client) return client_ % choice_.users + 1;
        return (*zipf_)(random_);
    }

private:
    const UserChoice& choice_;
    int client_;
    std::mt19937_64 random_;
    std::optional<ZipfDistribution> zipf_;
};

class Run {
public:
    explicit Run(const LoadOptions& o) : o_(o) {
        // names_[0]: no user (or the one fixed lease.user); 1..N: the chosen users.
        names_.push_back(o.lease.user);
        for (int u = 1; u <= o.user_choice.users; ++u) names_.push_back(o.user_choice.prefix + std::to_string(u));
    }

    LoadResult go() {
        std::vector<ClientTally> tallies(static_cast<std::size_t>(o_.clients));
        std::vector<std::thread> threads;
        start_ = Clock::now();
        for (int i = 0; i < o_.clients; ++i)
            threads.emplace_back([this, i, &t = tallies[static_cast<std::size_t>(i)]] { client(t, i); });
        while (!stop_.load()) {
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
            auto elapsed = Clock::now() - start_;
            if (o_.duration && elapsed >= *o_.duration) stop_ = true;
            if (o_.stop && o_.stop->load()) stop_ = true;
            if (o_.clients > 0 && finished_.load() == o_.clients) stop_ = true;
            if (o_.progress && elapsed - last_progress_ >= std::chrono::milliseconds(250)) {
                last_progress_ = elapsed;
                o_.progress(elapsed, done_.load(), failed_.load());
            }
        }
        for (auto& t : threads) t.join();
        LoadResult r;
        r.seconds = std::chrono::duration<double>(Clock::now() - start_).count();
        for (auto& t : tallies) {
            r.lease_wait.merge(t.lease_wait);
            r.cycle.merge(t.cycle);
            r.cycles += t.cycles;
            r.expiries += t.expiries;
            for (auto& [code, n] : t.errors) r.errors[code] += n;
            r.affinity_hits += t.affinity_hits;
            r.affinity_misses += t.affinity_misses;
            r.first_answer_hit.merge(t.first_answer_hit);
            r.first_answer_miss.merge(t.first_answer_miss);
            r.cold += t.cold;
        }
        return r;
    }

private:
    /// Takes one cycle from the shared budget; false when it is spent.
    bool take_turn() {
        if (stop_.load(std::memory_order_relaxed)) return false;
        if (!o_.count) return true;
        return issued_.fetch_add(1) < *o_.count;
    }

    void failed(ClientTally& t, const std::string& what) {
        ++t.errors[what];
        ++failed_;
    }

    /// Whether worker `pid` last served `user`; it has now served it. Grants
    /// of one worker are ordered (the next comes after this client's
    /// RELEASE), so the map sees them in the broker's order.
    bool served_last(pid_t pid, int user) {
        std::lock_guard lock(last_user_mutex_);
        auto [it, fresh] = last_user_.try_emplace(pid, user);
        bool hit = !fresh && it->second == user;
        it->second = user;
        return hit;
    }

    void client(ClientTally& t, int index) {
        std::vector<char> out(o_.payload, 'x'), in(o_.payload);
        for (std::size_t i = 0; i < out.size(); ++i) out[i] = static_cast<char>('a' + i % 26);
        try {
            if (o_.kind == CycleKind::lease) lease_loop(t, index, out, in);
            else connect_loop(t, out, in);
        } catch (const client::Error& e) {
            failed(t, e.kind() == client::Error::Kind::io ? "io" : "protocol");
        }
        ++finished_;
    }

    void lease_loop(ClientTally& t, int index, const std::vector<char>& out, std::vector<char>& in) {
        auto conn = client::Connection::connect(o_.socket);
        conn.on_expired([&](const client::Expired&) { ++t.expiries; });
        UserPicker users(o_, index);
        client::LeaseOptions options = o_.lease;
        while (take_turn()) {
            int user = users.next();
            const std::string& name = names_[static_cast<std::size_t>(user)];
            options.user = o_.user_choice.tell_broker ? name : std::string();
            auto t0 = Clock::now();
            client::Lease lease;
            try {
                lease = conn.lease(o_.protocol, options);
            } catch (const client::Error& e) {
                if (e.kind() != client::Error::Kind::refused) throw;
                failed(t, std::string(protocol::to_string(e.code())));
                if (o_.refused_pause.count() > 0) std::this_thread::sleep_for(o_.refused_pause);
                continue;
            }
            t.lease_wait.record(ns_since(t0));
            bool hit = false;
            if (!name.empty()) {
                hit = served_last(lease.worker_pid(), user);
                ++(hit ? t.affinity_hits : t.affinity_misses);
            }
            if (o_.greet_worker && !name.empty()) {
                std::optional<bool> cold = greet(lease.fd(), "@user " + name + "\n");
                if (!cold) {
                    failed(t, "greeting");
                    continue; // the Lease's destructor releases it
                }
                (hit ? t.first_answer_hit : t.first_answer_miss).record(ns_since(t0));
                if (*cold) ++t.cold;
            }
            bool ok = o_.payload == 0 || echo_round_trip(lease.fd(), out, in);
            if (o_.hold.count() > 0) std::this_thread::sleep_for(o_.hold);
            lease.take_fd().reset();
            try {
                lease.release();
            } catch (const client::Error& e) {
                // The lease may have ended already (notify=foreman: the
                // worker's READY=1 after the close): that is a cycle done.
                if (!e.is(protocol::FailCode::no_such_lease)) throw;
            }
            if (!ok) {
                failed(t, "echo");
                continue;
            }
            t.cycle.record(ns_since(t0));
            ++t.cycles;
            ++done_;
            if (o_.think.count() > 0) std::this_thread::sleep_for(o_.think);
        }
    }

    void connect_loop(ClientTally& t, const std::vector<char>& out, std::vector<char>& in) {
        while (take_turn()) {
            auto t0 = Clock::now();
            std::error_code ec;
            spawn::unique_fd fd = broker::connect_unix(o_.socket, ec);
            if (!fd) {
                failed(t, "io");
                continue;
            }
            bool ok = echo_round_trip(fd.get(), out, in);
            fd.reset();
            if (!ok) {
                failed(t, "echo");
                continue;
            }
            t.cycle.record(ns_since(t0));
            ++t.cycles;
            ++done_;
            if (o_.think.count() > 0) std::this_thread::sleep_for(o_.think);
        }
    }

    const LoadOptions& o_;
    std::vector<std::string> names_;
    std::mutex last_user_mutex_;
    std::unordered_map<pid_t, int> last_user_; ///< worker pid -> the user it last served
    Clock::time_point start_;
    Clock::duration last_progress_{};
    std::atomic<bool> stop_{false};
    std::atomic<std::uint64_t> issued_{0};
    std::atomic<std::uint64_t> done_{0};
    std::atomic<std::uint64_t> failed_{0};
    std::atomic<int> finished_{0};
};

} // namespace

LoadResult run_load(const LoadOptions& options) {
    if (options.clients < 0 || (options.clients == 0 && !options.duration && !options.stop))
        throw std::invalid_argument("clients must be at least 1 (or 0 with a duration: an idle run)");
    if (options.user_choice.users < 0) throw std::invalid_argument("users must be at least 0");
    return Run(options).go();
}

IdleClients::IdleClients(const std::string& socket, int n) {
    fds_.reserve(static_cast<std::size_t>(n));
    const std::string hello = protocol::version_line();
    for (int i = 0; i < n; ++i) {
        std::error_code ec;
        spawn::unique_fd fd = broker::connect_unix(socket, ec);
        if (!fd) throw std::runtime_error("idle client " + std::to_string(i) + ": connect: " + ec.message());
        if (::write(fd.get(), hello.data(), hello.size()) != static_cast<ssize_t>(hello.size()))
            throw std::runtime_error("idle client: write failed");
        fds_.push_back(fd.release());
    }
    // Wait for every VERSION line, so the broker has really taken each one.
    for (int fd : fds_) {
        char buf[64];
        if (::read(fd, buf, sizeof buf) <= 0) throw std::runtime_error("idle client: no VERSION from the broker");
    }
}

IdleClients::~IdleClients() {
    for (int fd : fds_) ::close(fd);
}

} // namespace foreman::bench
