#include "broker/metrics.hpp"

#include <charconv>
#include <csignal>
#include <sys/wait.h>

namespace foreman::broker::metrics {

namespace {

using protocol::EndReason;

/// Builds the exposition text: families, then their samples.
class Exposition {
public:
    /// One `# HELP` and one `# TYPE` line; `help` is escaped.
    void family(std::string_view name, std::string_view type, std::string_view help) {
        out_ += "# HELP ";
        out_ += name;
        out_ += ' ';
        for (char c : help) {
            if (c == '\\') out_ += "\\\\";
            else if (c == '\n') out_ += "\\n";
            else out_ += c;
        }
        out_ += "\n# TYPE ";
        out_ += name;
        out_ += ' ';
        out_ += type;
        out_ += '\n';
    }

    /// Starts a sample line: `name{` or `name` when no label follows.
    Exposition& sample(std::string_view name) {
        out_ += name;
        labels_ = 0;
        return *this;
    }
    Exposition& label(std::string_view key, std::string_view value) {
        out_ += labels_++ == 0 ? '{' : ',';
        out_ += key;
        out_ += "=\"";
        for (char c : value) {
            if (c == '\\') out_ += "\\\\";
            else if (c == '"') out_ += "\\\"";
            else if (c == '\n') out_ += "\\n";
            else out_ += c;
        }
        out_ += '"';
        return *this;
    }
    void value(std::uint64_t v) {
        close_labels();
        char buf[24];
        auto r = std::to_chars(buf, buf + sizeof buf, v);
        out_.append(buf, r.ptr);
        out_ += '\n';
    }
    void value(double v) {
        close_labels();
        out_ += number(v);
        out_ += '\n';
    }

    /// A float as the format writes it: shortest fixed notation ("0.00005", "10").
    static std::string number(double v) {
        char buf[64];
        auto r = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::fixed);
        if (r.ec != std::errc{}) r = std::to_chars(buf, buf + sizeof buf, v); // too long in fixed: shortest
        return std::string(buf, r.ptr);
    }

    std::string take() { return std::move(out_); }

private:
    void close_labels() {
        if (labels_ > 0) out_ += '}';
        out_ += ' ';
    }

    std::string out_;
    int labels_ = 0;
};

double seconds(std::chrono::nanoseconds d) { return std::chrono::duration<double>(d).count(); }

constexpr std::array<ExitCause, exit_cause_count> exit_causes{ExitCause::retired, ExitCause::killed,
                                                              ExitCause::crashed, ExitCause::exited};
constexpr std::array<std::string_view, shown_state_count> shown_state_names{"starting", "idle", "leased",
                                                                            "stopping"};

ShownState shown(lease::WorkerState s) {
    switch (s) {
    case lease::WorkerState::idle: return ShownState::idle;
    case lease::WorkerState::leased: return ShownState::leased;
    case lease::WorkerState::stopping:
    case lease::WorkerState::gone: return ShownState::stopping;
    case lease::WorkerState::starting:
    case lease::WorkerState::finishing: break;
    }
    return ShownState::starting;
}

/// `name{pool="..."} value` for every pool.
template <class Get>
void per_pool(Exposition& e, std::string_view name, const Scrape& s, Get get) {
    for (const auto& p : s.pools) e.sample(name).label("pool", p.name).value(static_cast<std::uint64_t>(get(p)));
}

void rejections(Exposition& e, std::string_view pool, const PoolCounters& c) {
    for (std::size_t i = 0; i < fail_code_count; ++i)
        if (c.rejections[i] != 0)
            e.sample("foreman_lease_rejections_total")
                .label("pool", pool)
                .label("code", protocol::to_string(static_cast<protocol::FailCode>(i)))
                .value(c.rejections[i]);
}

} // namespace

std::uint64_t WaitHistogram::count() const {
    std::uint64_t n = 0;
    for (auto b : buckets_) n += b;
    return n;
}

std::string_view to_string(ExitCause cause) {
    switch (cause) {
    case ExitCause::retired: return "retired";
    case ExitCause::killed: return "killed";
    case ExitCause::crashed: return "crashed";
    case ExitCause::exited: return "exited";
    }
    return "exited";
}

ExitCause exit_cause(int wait_status, int signal_sent) {
    if (WIFSIGNALED(wait_status)) {
        int sig = WTERMSIG(wait_status);
        if (sig == SIGKILL && signal_sent == SIGKILL) return ExitCause::killed;
        if (sig == SIGTERM && signal_sent != 0) return ExitCause::retired;
        return ExitCause::crashed;
    }
    // An exit status after SIGTERM is the worker obeying it (its handler exits).
    return signal_sent != 0 ? ExitCause::retired : ExitCause::exited;
}

std::string_view end_reason_label(EndReason reason) {
    switch (reason) {
    case EndReason::released: return "release";
    case EndReason::holder_closed: return "disconnect";
    default: return protocol::to_string(reason);
    }
}

void add_pool_view(PoolSample& sample, const lease::PoolView& view) {
    for (std::size_t i = 0; i < lease::end_reason_count; ++i) sample.leases_ended[i] += view.leases_ended[i];
    sample.start_failures += view.start_failures_total;
    sample.queued += view.queued;
    for (const auto& w : view.workers) ++sample.workers[static_cast<std::size_t>(shown(w.state))];
}

std::string render(const Scrape& s) {
    Exposition e;

    e.family("foreman_leases_granted_total", "counter", "Leases granted (LEASE answered OK).");
    per_pool(e, "foreman_leases_granted_total", s, [](const PoolSample& p) { return p.counters.leases_granted; });

    e.family("foreman_leases_ended_total", "counter",
             "Leases ended, by reason: release (RELEASE), disconnect (the holder's connection closed), or the "
             "EXPIRED reasons ttl, worker-ready, worker-exit, processtime, shutdown.");
    for (const auto& p : s.pools)
        for (std::size_t i = 0; i < lease::end_reason_count; ++i)
            e.sample("foreman_leases_ended_total")
                .label("pool", p.name)
                .label("reason", end_reason_label(static_cast<EndReason>(i)))
                .value(p.leases_ended[i]);

    e.family("foreman_lease_wait_seconds", "histogram",
             "Time from a LEASE reaching the broker to its grant (granted LEASEs only).");
    for (const auto& p : s.pools) {
        const WaitHistogram& h = p.counters.lease_wait;
        std::uint64_t cumulative = 0;
        for (std::size_t i = 0; i < lease_wait_bounds.size(); ++i) {
            cumulative += h.bucket(i);
            e.sample("foreman_lease_wait_seconds_bucket")
                .label("pool", p.name)
                .label("le", Exposition::number(seconds(lease_wait_bounds[i])))
                .value(cumulative);
        }
        cumulative += h.bucket(lease_wait_bounds.size());
        e.sample("foreman_lease_wait_seconds_bucket").label("pool", p.name).label("le", "+Inf").value(cumulative);
        e.sample("foreman_lease_wait_seconds_sum").label("pool", p.name).value(seconds(h.sum()));
        e.sample("foreman_lease_wait_seconds_count").label("pool", p.name).value(cumulative);
    }

    e.family("foreman_lease_rejections_total", "counter",
             "LEASEs answered FAIL, by code (codes seen so far only); pool=\"\" for LEASEs naming no pool.");
    for (const auto& p : s.pools) rejections(e, p.name, p.counters);
    rejections(e, "", s.unknown_pool);

    e.family("foreman_workers", "gauge", "Workers by state (starting includes those owing READY=1 after a lease).");
    for (const auto& p : s.pools)
        for (std::size_t i = 0; i < shown_state_count; ++i)
            e.sample("foreman_workers").label("pool", p.name).label("state", shown_state_names[i]).value(p.workers[i]);

    e.family("foreman_queue_length", "gauge", "LEASEs waiting for a worker.");
    per_pool(e, "foreman_queue_length", s, [](const PoolSample& p) { return p.queued; });

    e.family("foreman_spawns_total", "counter", "Worker processes the broker set out to start.");
    per_pool(e, "foreman_spawns_total", s, [](const PoolSample& p) { return p.counters.spawns; });

    e.family("foreman_spawn_failures_total", "counter",
             "Worker starts that failed: the spawn failed, or the worker exited or reached start_timeout_ms "
             "before it was ready. Each one lengthens the pool's back-off.");
    per_pool(e, "foreman_spawn_failures_total", s, [](const PoolSample& p) { return p.start_failures; });

    e.family("foreman_worker_exits_total", "counter",
             "Worker processes reaped, by cause: retired (ended after the broker's SIGTERM), killed (by the "
             "broker's SIGKILL after kill_grace_ms), crashed (a signal the broker did not send), exited (by "
             "itself, unasked).");
    for (const auto& p : s.pools)
        for (ExitCause c : exit_causes)
            e.sample("foreman_worker_exits_total")
                .label("pool", p.name)
                .label("cause", to_string(c))
                .value(p.counters.exits[static_cast<std::size_t>(c)]);

    e.family("foreman_control_connections", "gauge", "Open connections to the control socket.");
    e.sample("foreman_control_connections").value(s.control_connections);

    e.family("foreman_max_workers", "gauge", "The cap on workers across all pools (max_workers).");
    e.sample("foreman_max_workers").value(s.max_workers);

    e.family("foreman_start_time_seconds", "gauge", "When the broker started, in seconds since the Unix epoch.");
    e.sample("foreman_start_time_seconds").value(s.start_time_seconds);

    return e.take();
}

} // namespace foreman::broker::metrics
