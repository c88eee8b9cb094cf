#include "bench/tune_report.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <sys/wait.h>
#include <unistd.h>

namespace foreman::bench {

std::string TuneSetting::label() const {
    return std::to_string(ttl_ms) + "/" + std::to_string(heartbeat_ms) + "/" + std::to_string(heartbeat_timeout_ms);
}

double TuneRow::recovery_ms(FaultKind kind, double q) const {
    const auto& h = faults[static_cast<std::size_t>(kind)].recovery;
    return static_cast<double>(q >= 1 ? h.max() : h.percentile(q)) / 1e6;
}

double TuneRow::worst_p99_ms() const {
    double worst = 0;
    for (auto k : all_fault_kinds) worst = std::max(worst, recovery_ms(k, 0.99));
    return worst;
}

double TuneRow::mean_p99_ms() const {
    double sum = 0;
    for (auto k : all_fault_kinds) sum += recovery_ms(k, 0.99);
    return sum / static_cast<double>(all_fault_kinds.size());
}

double TuneRow::false_expiry_rate() const {
    return load.leases ? static_cast<double>(load.false_expiries()) / static_cast<double>(load.leases) : 0;
}

double TuneRow::overhead_pct(int fleet) const {
    if (setting.heartbeat_ms == 0) return 0;
    double beats_per_s = fleet * 1000.0 / static_cast<double>(setting.heartbeat_ms);
    return std::max(0.0, heartbeat.cpu_us_per_heartbeat) * beats_per_s / 1e6 * 100;
}

namespace {

bool within(const TuneRow& r, const Tolerance& tol) {
    for (auto k : all_fault_kinds)
        if (r.faults[static_cast<std::size_t>(k)].unrecovered > 0 ||
            r.faults[static_cast<std::size_t>(k)].recovery.count() == 0)
            return false;
    if (r.load.leases == 0 || r.false_expiry_rate() > tol.max_false_expiry_rate) return false;
    if (tol.max_recovery_ms && r.worst_p99_ms() > *tol.max_recovery_ms) return false;
    return r.overhead_pct(tol.fleet) <= tol.max_overhead_pct;
}

std::string fmt(const char* f, double v) {
    char buf[64];
    std::snprintf(buf, sizeof buf, f, v);
    return buf;
}

/// gnuplot on PATH, else /usr/bin/gnuplot, else "".
std::string find_gnuplot() {
    const char* path = std::getenv("PATH");
    std::string dirs = path ? path : "";
    dirs += ":/usr/bin";
    std::size_t start = 0;
    while (start <= dirs.size()) {
        std::size_t end = dirs.find(':', start);
        if (end == std::string::npos) end = dirs.size();
        std::string dir = dirs.substr(start, end - start);
        if (!dir.empty()) {
            std::string candidate = dir + "/gnuplot";
            if (::access(candidate.c_str(), X_OK) == 0) return candidate;
        }
        start = end + 1;
    }
    return {};
}

std::uint64_t load_errors(const TuneRow& r) {
    std::uint64_t n = 0;
    for (auto& [what, count] : r.load.errors) n += count;
    return n;
}

std::uint64_t unrecovered(const TuneRow& r) {
    std::uint64_t n = 0;
    for (auto& f : r.faults) n += f.unrecovered;
    return n;
}

} // namespace

std::optional<std::size_t> recommend(const std::vector<TuneRow>& rows, const Tolerance& tol) {
    std::optional<std::size_t> best;
    for (std::size_t i = 0; i < rows.size(); ++i) {
        if (!within(rows[i], tol)) continue;
        if (!best) {
            best = i;
            continue;
        }
        const auto &a = rows[i], &b = rows[*best];
        if (a.mean_p99_ms() < b.mean_p99_ms() ||
            (a.mean_p99_ms() == b.mean_p99_ms() && a.overhead_pct(tol.fleet) < b.overhead_pct(tol.fleet)))
            best = i;
    }
    return best;
}

void write_csv(const std::string& path, const std::vector<TuneRow>& rows, const Tolerance& tol,
               std::optional<std::size_t> chosen) {
    std::ofstream out(path);
    if (!out) throw std::runtime_error("cannot write " + path);
    out << "setting,ttl_ms,heartbeat_ms,heartbeat_timeout_ms,kill_grace_ms";
    for (auto k : all_fault_kinds) {
        auto id = fault_id(k);
        out << "," << id << "_faults," << id << "_p50_ms," << id << "_p99_ms," << id << "_max_ms," << id
            << "_unrecovered";
    }
    out << ",leases,lease_seconds,false_expiries,false_ttl,false_worker_exit,false_expiry_rate,client_slip_p99_ms,"
           "cpu_us_per_heartbeat,heartbeats_per_s,broker_idle_cpu_ms_per_s,broker_beating_cpu_ms_per_s,"
           "heartbeat_overhead_pct,load_errors,recommended\n";
    for (std::size_t i = 0; i < rows.size(); ++i) {
        const auto& r = rows[i];
        auto expired = [&](const char* reason) {
            auto it = r.load.expired.find(reason);
            return it == r.load.expired.end() ? std::uint64_t{0} : it->second;
        };
        out << r.setting.label() << "," << r.setting.ttl_ms << "," << r.setting.heartbeat_ms << ","
            << r.setting.heartbeat_timeout_ms << "," << r.setting.kill_grace_ms;
        for (auto k : all_fault_kinds) {
            const auto& f = r.faults[static_cast<std::size_t>(k)];
            out << "," << f.injected << "," << fmt("%.3f", r.recovery_ms(k, 0.5)) << ","
                << fmt("%.3f", r.recovery_ms(k, 0.99)) << "," << fmt("%.3f", r.recovery_ms(k, 1)) << ","
                << f.unrecovered;
        }
        out << "," << r.load.leases << "," << fmt("%.2f", r.load.lease_seconds) << "," << r.load.false_expiries()
            << "," << expired("ttl") << "," << expired("worker-exit") << "," << fmt("%.6f", r.false_expiry_rate())
            << "," << fmt("%.3f", static_cast<double>(r.load.slip.percentile(0.99)) / 1e6) << ","
            << fmt("%.3f", r.heartbeat.cpu_us_per_heartbeat) << "," << fmt("%.1f", r.heartbeat.heartbeats_per_s)
            << "," << fmt("%.3f", r.heartbeat.baseline_cpu_ms_per_s) << ","
            << fmt("%.3f", r.heartbeat.beating_cpu_ms_per_s) << "," << fmt("%.4f", r.overhead_pct(tol.fleet)) << ","
            << load_errors(r) << "," << (chosen && *chosen == i ? 1 : 0) << "\n";
    }
}

void print_table(std::FILE* out, const std::vector<TuneRow>& rows, const Tolerance& tol,
                 std::optional<std::size_t> chosen) {
    std::fprintf(out,
                 "recovery in ms (p50 / p99, n faults); false expiries / leases; broker CPU per heartbeat in us;\n"
                 "overhead: broker CPU on heartbeats in %% of one core for %d leased workers\n\n",
                 tol.fleet);
    std::fprintf(out, "  %-16s %-22s %-22s %-22s %-14s %8s %8s %9s %9s\n", "ttl/hb/timeout", "client-kill",
                 "detached", "worker-stop", "false/leases", "slip99", "us/beat", "overhead", "");
    for (std::size_t i = 0; i < rows.size(); ++i) {
        const auto& r = rows[i];
        std::fprintf(out, "%s %-16s", chosen && *chosen == i ? "*" : " ", r.setting.label().c_str());
        for (auto k : all_fault_kinds) {
            char cell[64];
            std::snprintf(cell, sizeof cell, "%.1f / %.1f (%llu)", r.recovery_ms(k, 0.5), r.recovery_ms(k, 0.99),
                          static_cast<unsigned long long>(r.faults[static_cast<std::size_t>(k)].recovery.count()));
            std::fprintf(out, " %-22s", cell);
        }
        char fe[32];
        std::snprintf(fe, sizeof fe, "%llu/%llu", static_cast<unsigned long long>(r.load.false_expiries()),
                      static_cast<unsigned long long>(r.load.leases));
        std::fprintf(out, " %-14s %7.1fms %8.2f %8.3f%% %s\n", fe,
                     static_cast<double>(r.load.slip.percentile(0.99)) / 1e6, r.heartbeat.cpu_us_per_heartbeat,
                     r.overhead_pct(tol.fleet), unrecovered(r) ? "UNRECOVERED" : load_errors(r) ? "load errors" : "");
    }
}

void print_recommendation(std::FILE* out, const std::vector<TuneRow>& rows, const Tolerance& tol,
                          std::optional<std::size_t> chosen) {
    std::fprintf(out, "\ntolerance: false-expiry rate <= %g, heartbeat overhead <= %g%% of a core for %d leased workers",
                 tol.max_false_expiry_rate, tol.max_overhead_pct, tol.fleet);
    if (tol.max_recovery_ms) std::fprintf(out, ", worst p99 recovery <= %g ms", *tol.max_recovery_ms);
    std::fprintf(out, "\n");
    if (!chosen) {
        std::fprintf(out, "no setting is within tolerance: widen it, or sweep longer ttls and timeouts\n");
        return;
    }
    const auto& r = rows[*chosen];
    const auto& s = r.setting;
    std::fprintf(out, "recommended: ttl %llu ms, heartbeat every %llu ms, heartbeat timeout %llu ms (kill grace %llu ms)\n",
                 static_cast<unsigned long long>(s.ttl_ms), static_cast<unsigned long long>(s.heartbeat_ms),
                 static_cast<unsigned long long>(s.heartbeat_timeout_ms),
                 static_cast<unsigned long long>(s.kill_grace_ms));
    std::fprintf(out, "  recovery p99: client-kill %.1f ms, detached %.0f ms, worker-stop %.0f ms; "
                      "%llu false expiries in %llu leases; %.2f us of broker CPU per heartbeat\n",
                 r.recovery_ms(FaultKind::client_kill, 0.99), r.recovery_ms(FaultKind::detached, 0.99),
                 r.recovery_ms(FaultKind::worker_stop, 0.99),
                 static_cast<unsigned long long>(r.load.false_expiries()),
                 static_cast<unsigned long long>(r.load.leases), r.heartbeat.cpu_us_per_heartbeat);
    if (r.load.false_expiries() == 0 && static_cast<double>(r.load.leases) < 3 / tol.max_false_expiry_rate)
        std::fprintf(out,
                     "  note: 0 false expiries in %llu leases bounds the rate only below %.2g (95%%, rule of three);\n"
                     "  run longer (--duration) to show %g\n",
                     static_cast<unsigned long long>(r.load.leases), 3.0 / static_cast<double>(r.load.leases),
                     tol.max_false_expiry_rate);
    std::fprintf(out, "\npaste into the pool's section:\n\n");
    std::fprintf(out, "lease_ttl_ms = %llu\n", static_cast<unsigned long long>(s.ttl_ms));
    std::fprintf(out, "heartbeat_timeout_ms = %llu\n", static_cast<unsigned long long>(s.heartbeat_timeout_ms));
    std::fprintf(out, "kill_grace_ms = %llu\n", static_cast<unsigned long long>(s.kill_grace_ms));
    std::fprintf(out, "notify = foreman\n");
    if (s.heartbeat_ms * 2 == s.heartbeat_timeout_ms)
        std::fprintf(out, "# the worker beats every WATCHDOG_USEC/2 = %llu ms by itself (sd_watchdog_enabled)\n",
                     static_cast<unsigned long long>(s.heartbeat_ms));
    else
        std::fprintf(out, "args = --heartbeat-ms %llu    # foreman-echo; other workers: WATCHDOG=1 every %llu ms\n",
                     static_cast<unsigned long long>(s.heartbeat_ms), static_cast<unsigned long long>(s.heartbeat_ms));
    std::fprintf(out, "\nand in clients: RENEW every ttl/3 = %llu ms\n", static_cast<unsigned long long>(s.ttl_ms / 3));
}

std::string plot_png(const std::string& png, const std::vector<TuneRow>& rows, const Tolerance& tol,
                     std::optional<std::size_t> chosen) {
    const std::string gnuplot = find_gnuplot();
    if (gnuplot.empty()) return "gnuplot not found (on PATH or /usr/bin); the CSV is written";
    std::string script = png;
    if (script.size() > 4 && script.compare(script.size() - 4, 4, ".png") == 0) script.resize(script.size() - 4);
    script += ".gp";
    std::ofstream gp(script);
    if (!gp) return "cannot write " + script;
    const int n = static_cast<int>(rows.size());
    const int width = std::clamp(500 + 40 * n, 1000, 2400);
    // The data: x, label, p50 and p99 per kind (log scale: at least 0.01),
    // us per heartbeat, false expiries per 1000 leases.
    gp << "$data << EOD\n";
    for (int i = 0; i < n; ++i) {
        const auto& r = rows[static_cast<std::size_t>(i)];
        gp << i << " \"" << r.setting.label() << "\"";
        for (auto k : all_fault_kinds) {
            bool any = r.faults[static_cast<std::size_t>(k)].recovery.count() > 0;
            for (double q : {0.5, 0.99}) gp << " " << (any ? fmt("%.3f", std::max(0.01, r.recovery_ms(k, q))) : "NaN");
        }
        gp << " " << fmt("%.3f", r.heartbeat.cpu_us_per_heartbeat) << " " << fmt("%.3f", r.false_expiry_rate() * 1000)
           << " " << fmt("%.4f", r.overhead_pct(tol.fleet)) << "\n";
    }
    gp << "EOD\n";
    gp << "set terminal pngcairo size " << width << ",1000 font 'DejaVu Sans,11'\n"
       << "set output '" << png << "'\n"
       << "set multiplot layout 2,1 title 'foreman-bench tune: "
       << (chosen ? "recommended " + rows[*chosen].setting.label() + " (green dashed line)" : "no setting within tolerance")
       << "' font ',14'\n"
       << "set xrange [-0.6:" << n - 0.4 << "]\n"
       << "set xtics rotate by 45 right nomirror font ',10'\n"
       << "set grid ytics\n"
       << "set termoption noenhanced\n"
       << "set key outside top center horizontal font ',10'\n"
       << "set lmargin 12\nset rmargin 12\n";
    // Group separators: a new ttl starts a group.
    for (int i = 1; i < n; ++i)
        if (rows[static_cast<std::size_t>(i)].setting.ttl_ms != rows[static_cast<std::size_t>(i - 1)].setting.ttl_ms)
            gp << "set arrow from " << i - 0.5 << ",graph 0 to " << i - 0.5
               << ",graph 1 nohead lc rgb '#bbbbbb' lw 1 front\n";
    if (chosen)
        gp << "set arrow from " << *chosen << ",graph 0 to " << *chosen << ",graph 1 nohead lc rgb '#009900' lw 2 dt 2 front\n";
    // Top: recovery, log scale.
    gp << "set title 'Recovery: fault -> worker (or its replacement) leased again' font ',12'\n"
       << "set logscale y 10\n"
       << "set ylabel 'recovery (ms, log scale)'\n"
       << "set format y '%g'\n"
       << "set xlabel ''\n"
       << "plot $data using 1:3:xtic(2) with linespoints lw 2 pt 7 lc rgb '#1f77b4' title 'client-kill p50', \\\n"
       << "     '' using 1:4 with points pt 6 ps 1.5 lc rgb '#1f77b4' title 'client-kill p99', \\\n"
       << "     '' using 1:5 with linespoints lw 2 pt 5 lc rgb '#ff7f0e' title 'detached (ttl) p50', \\\n"
       << "     '' using 1:6 with points pt 4 ps 1.5 lc rgb '#ff7f0e' title 'detached (ttl) p99', \\\n"
       << "     '' using 1:7 with linespoints lw 2 pt 9 lc rgb '#d62728' title 'worker-stop p50', \\\n"
       << "     '' using 1:8 with points pt 8 ps 1.5 lc rgb '#d62728' title 'worker-stop p99'\n";
    // Bottom: broker CPU per heartbeat (bars) and false expiries (y2).
    gp << "unset logscale y\n"
       << "set title 'Broker CPU per heartbeat (bars), false expiries under load (points, right axis)' font ',12'\n"
       << "set ylabel 'broker CPU per heartbeat (us)'\n"
       << "set yrange [0:*]\n"
       << "set y2label 'false expiries per 1000 leases'\n"
       << "set y2range [0:*]\n"
       << "set y2tics\n"
       << "set xlabel 'setting: lease_ttl_ms / heartbeat interval ms / heartbeat_timeout_ms' font ',11'\n"
       << "set style fill solid 0.6 border -1\n"
       << "set boxwidth 0.6\n"
       << "plot $data using 1:9:xtic(2) with boxes lc rgb '#2ca02c' title 'us of broker CPU per heartbeat', \\\n"
       << "     '' using 1:10 axes x1y2 with points pt 7 ps 1.8 lc rgb '#d62728' title 'false expiries / 1000 leases'\n"
       << "unset multiplot\n";
    gp.close();
    std::string cmd = "'" + gnuplot + "' '" + script + "' 2>&1";
    FILE* p = ::popen(cmd.c_str(), "r");
    if (!p) return "cannot run gnuplot";
    std::string output;
    char buf[512];
    while (std::fgets(buf, sizeof buf, p)) output += buf;
    int status = ::pclose(p);
    if (status != 0) return "gnuplot failed: " + output;
    return {};
}

} // namespace foreman::bench
