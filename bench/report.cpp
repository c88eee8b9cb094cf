#include "bench/report.hpp"

#include <boost/json.hpp>

#include <algorithm>

#include <sstream>
#include <unistd.h>

namespace foreman::bench {

namespace {
constexpr double quantiles[] = {0.5, 0.9, 0.99, 0.999};
constexpr const char* quantile_names[] = {"p50", "p90", "p99", "p99.9"};

std::string errors_text(const LoadResult& r) {
    if (r.errors.empty()) return "0";
    std::string s;
    for (auto& [code, n] : r.errors) s += (s.empty() ? "" : ",") + code + "=" + std::to_string(n);
    return s;
}

bool has_lease_wait(const std::vector<NamedResult>& rows) {
    for (auto& row : rows)
        if (row.result.lease_wait.count() > 0) return true;
    return false;
}
} // namespace

double us(std::uint64_t ns) { return static_cast<double>(ns) / 1000.0; }

void print_table(std::FILE* out, const std::vector<NamedResult>& rows) {
    std::size_t width = 10;
    for (auto& r : rows) width = std::max(width, r.name.size());
    auto histogram_rows = [&](const char* title, auto get) {
        std::fprintf(out, "%-*s %10s %10s", static_cast<int>(width), title, "cycles", "per s");
        for (auto q : quantile_names) std::fprintf(out, " %9s", q);
        std::fprintf(out, " %9s\n", "max");
        for (auto& row : rows) {
            const Histogram& h = get(row.result);
            std::fprintf(out, "%-*s %10llu %10.0f", static_cast<int>(width), row.name.c_str(),
                         static_cast<unsigned long long>(row.result.cycles), row.result.per_second());
            for (auto q : quantiles) std::fprintf(out, " %9.1f", us(h.percentile(q)));
            std::fprintf(out, " %9.1f\n", us(h.max()));
        }
    };
    if (has_lease_wait(rows)) {
        histogram_rows("lease wait (us)", [](const LoadResult& r) -> const Histogram& { return r.lease_wait; });
        std::fputc('\n', out);
    }
    histogram_rows("full cycle (us)", [](const LoadResult& r) -> const Histogram& { return r.cycle; });
    std::fputc('\n', out);
    std::fprintf(out, "%-*s %10s %10s", static_cast<int>(width), "", "expiries", "errors");
    std::vector<std::string> extra_keys;
    for (auto& row : rows)
        for (auto& [k, v] : row.extra)
            if (std::find(extra_keys.begin(), extra_keys.end(), k) == extra_keys.end()) extra_keys.push_back(k);
    for (auto& k : extra_keys) std::fprintf(out, " %12s", k.c_str());
    std::fputc('\n', out);
    for (auto& row : rows) {
        std::fprintf(out, "%-*s %10llu %10s", static_cast<int>(width), row.name.c_str(),
                     static_cast<unsigned long long>(row.result.expiries), errors_text(row.result).c_str());
        for (auto& k : extra_keys) {
            auto it = row.extra.find(k);
            if (it == row.extra.end()) std::fprintf(out, " %12s", "-");
            else std::fprintf(out, " %12.4g", it->second);
        }
        std::fputc('\n', out);
    }
}

std::string to_csv(const std::vector<NamedResult>& rows) {
    std::ostringstream out;
    out << "name,cycles,seconds,per_second,expiries,errors";
    for (auto q : quantile_names) out << ",lease_wait_" << q << "_us";
    out << ",lease_wait_max_us";
    for (auto q : quantile_names) out << ",cycle_" << q << "_us";
    out << ",cycle_max_us";
    std::vector<std::string> extra_keys;
    for (auto& row : rows)
        for (auto& [k, v] : row.extra)
            if (std::find(extra_keys.begin(), extra_keys.end(), k) == extra_keys.end()) extra_keys.push_back(k);
    for (auto& k : extra_keys) out << "," << k;
    out << "\n";
    for (auto& row : rows) {
        const auto& r = row.result;
        out << row.name << "," << r.cycles << "," << r.seconds << "," << r.per_second() << "," << r.expiries << ","
            << r.error_count();
        for (auto q : quantiles) out << "," << us(r.lease_wait.percentile(q));
        out << "," << us(r.lease_wait.max());
        for (auto q : quantiles) out << "," << us(r.cycle.percentile(q));
        out << "," << us(r.cycle.max());
        for (auto& k : extra_keys) {
            auto it = row.extra.find(k);
            out << ",";
            if (it != row.extra.end()) out << it->second;
        }
        out << "\n";
    }
    return out.str();
}

std::string to_json(const std::vector<NamedResult>& rows) {
    namespace json = boost::json;
    auto histogram = [](const Histogram& h) {
        json::object o;
        o["count"] = h.count();
        for (std::size_t i = 0; i < 4; ++i) o[quantile_names[i] + std::string("_us")] = us(h.percentile(quantiles[i]));
        o["max_us"] = us(h.max());
        return o;
    };
    json::array out;
    for (auto& row : rows) {
        const auto& r = row.result;
        json::object o;
        o["name"] = row.name;
        o["cycles"] = r.cycles;
        o["seconds"] = r.seconds;
        o["per_second"] = r.per_second();
        o["expiries"] = r.expiries;
        json::object errors;
        for (auto& [code, n] : r.errors) errors[code] = n;
        o["errors"] = std::move(errors);
        if (r.lease_wait.count() > 0) o["lease_wait"] = histogram(r.lease_wait);
        o["cycle"] = histogram(r.cycle);
        for (auto& [k, v] : row.extra) o[k] = v;
        out.push_back(std::move(o));
    }
    return json::serialize(out) + "\n";
}

void progress_line(const std::string& label, double elapsed_s, std::uint64_t cycles, std::uint64_t errors) {
    if (!::isatty(STDERR_FILENO)) return;
    double rate = elapsed_s > 0 ? static_cast<double>(cycles) / elapsed_s : 0;
    std::fprintf(stderr, "\r%s  %6.1f s  %10llu cycles  %9.0f/s  %llu errors   ", label.c_str(), elapsed_s,
                 static_cast<unsigned long long>(cycles), rate, static_cast<unsigned long long>(errors));
    std::fflush(stderr);
}

void end_progress() {
    if (!::isatty(STDERR_FILENO)) return;
    std::fprintf(stderr, "\r\033[K");
    std::fflush(stderr);
}

} // namespace foreman::bench
