#include "prometheus_text.hpp"

#include <cmath>
#include <cstdlib>
#include <set>
#include <stdexcept>

namespace foreman::test {

namespace {

bool is_name_start(char c, bool colon) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (colon && c == ':');
}
bool is_name_char(char c, bool colon) { return is_name_start(c, colon) || (c >= '0' && c <= '9'); }

bool valid_name(std::string_view s, bool colon) {
    if (s.empty() || !is_name_start(s[0], colon)) return false;
    for (char c : s)
        if (!is_name_char(c, colon)) return false;
    return true;
}

bool ends_with(std::string_view s, std::string_view suffix) {
    return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

/// Reads one line; `fail` names the line.
class LineReader {
public:
    LineReader(std::string_view line, std::size_t number) : s_(line), number_(number) {}

    [[noreturn]] void fail(const std::string& why) const {
        throw std::runtime_error("line " + std::to_string(number_) + ": " + why + ": " + std::string(s_));
    }
    bool done() const { return pos_ == s_.size(); }
    char peek() const { return done() ? '\0' : s_[pos_]; }
    void skip_blanks() {
        while (!done() && (s_[pos_] == ' ' || s_[pos_] == '\t')) ++pos_;
    }
    std::string_view name(bool colon) {
        std::size_t start = pos_;
        while (!done() && is_name_char(s_[pos_], colon)) ++pos_;
        std::string_view n = s_.substr(start, pos_ - start);
        if (!valid_name(n, colon)) fail("bad " + std::string(colon ? "metric" : "label") + " name");
        return n;
    }
    void expect(char c) {
        if (peek() != c) fail(std::string("expected '") + c + "'");
        ++pos_;
    }
    std::string quoted() {
        expect('"');
        std::string out;
        for (;;) {
            if (done()) fail("unterminated label value");
            char c = s_[pos_++];
            if (c == '"') return out;
            if (c == '\\') {
                if (done()) fail("dangling escape");
                char e = s_[pos_++];
                if (e == '\\') out += '\\';
                else if (e == '"') out += '"';
                else if (e == 'n') out += '\n';
                else fail("bad escape in a label value");
            } else {
                out += c;
            }
        }
    }
    std::string_view token() {
        std::size_t start = pos_;
        while (!done() && s_[pos_] != ' ' && s_[pos_] != '\t') ++pos_;
        return s_.substr(start, pos_ - start);
    }
    std::string_view rest() const { return s_.substr(pos_); }

private:
    std::string_view s_;
    std::size_t number_;
    std::size_t pos_ = 0;
};

double parse_value(std::string_view t, const LineReader& r) {
    if (t == "+Inf") return INFINITY;
    if (t == "-Inf") return -INFINITY;
    if (t == "NaN") return NAN;
    if (t.empty()) r.fail("missing value");
    std::string s(t);
    char* end = nullptr;
    double v = std::strtod(s.c_str(), &end);
    if (end != s.c_str() + s.size() || s == "inf" || s == "nan") r.fail("bad value");
    return v;
}

std::string unescape_help(std::string_view h, const LineReader& r) {
    std::string out;
    for (std::size_t i = 0; i < h.size(); ++i) {
        if (h[i] != '\\') {
            out += h[i];
            continue;
        }
        if (++i == h.size()) r.fail("dangling escape in HELP");
        if (h[i] == '\\') out += '\\';
        else if (h[i] == 'n') out += '\n';
        else r.fail("bad escape in HELP");
    }
    return out;
}

/// Whether a sample called `sample` belongs to family `f`.
bool belongs(const PromFamily& f, std::string_view sample) {
    if (sample == f.name) return f.type != "histogram";
    if (f.type == "histogram")
        return sample == f.name + "_bucket" || sample == f.name + "_sum" || sample == f.name + "_count";
    if (f.type == "summary") return sample == f.name + "_sum" || sample == f.name + "_count";
    return false;
}

void check_histogram(const PromFamily& f) {
    struct Series {
        std::vector<std::pair<double, double>> buckets; // le, cumulative count
        std::optional<double> count, sum;
    };
    std::map<Labels, Series> series;
    for (const auto& s : f.samples) {
        Labels key = s.labels;
        if (s.name == f.name + "_bucket") {
            auto le = key.find("le");
            if (le == key.end()) throw std::runtime_error(f.name + ": a bucket without le");
            char* end = nullptr;
            double bound = le->second == "+Inf" ? INFINITY : std::strtod(le->second.c_str(), &end);
            if (le->second != "+Inf" && (end != le->second.c_str() + le->second.size() || le->second.empty()))
                throw std::runtime_error(f.name + ": bad le " + le->second);
            key.erase(le);
            series[key].buckets.emplace_back(bound, s.value);
        } else if (s.name == f.name + "_count") {
            series[key].count = s.value;
        } else {
            series[key].sum = s.value;
        }
    }
    for (const auto& [labels, s] : series) {
        if (s.buckets.empty() || !std::isinf(s.buckets.back().first))
            throw std::runtime_error(f.name + ": no +Inf bucket (last)");
        for (std::size_t i = 1; i < s.buckets.size(); ++i) {
            if (!(s.buckets[i].first > s.buckets[i - 1].first))
                throw std::runtime_error(f.name + ": buckets not in ascending le");
            if (s.buckets[i].second < s.buckets[i - 1].second)
                throw std::runtime_error(f.name + ": buckets not cumulative");
        }
        if (!s.count || *s.count != s.buckets.back().second)
            throw std::runtime_error(f.name + ": _count missing or not the +Inf bucket");
        if (!s.sum) throw std::runtime_error(f.name + ": _sum missing");
    }
}

} // namespace

const PromFamily* PromText::family(std::string_view name) const {
    for (const auto& f : families)
        if (f.name == name) return &f;
    return nullptr;
}

std::optional<double> PromText::value(std::string_view name, const Labels& labels) const {
    for (const auto& f : families)
        for (const auto& s : f.samples)
            if (s.name == name && s.labels == labels) return s.value;
    return std::nullopt;
}

double PromText::sum(std::string_view name, const Labels& match) const {
    double total = 0;
    for (const auto& f : families)
        for (const auto& s : f.samples) {
            if (s.name != name) continue;
            bool all = true;
            for (const auto& [k, v] : match) {
                auto it = s.labels.find(k);
                all = all && it != s.labels.end() && it->second == v;
            }
            if (all) total += s.value;
        }
    return total;
}

PromText parse_prometheus_text(std::string_view text) {
    if (!text.empty() && text.back() != '\n') throw std::runtime_error("the text does not end in a newline");
    PromText out;
    std::set<std::pair<std::string, Labels>> seen;
    std::set<std::string> help_seen, type_seen;
    std::size_t number = 0;
    while (!text.empty()) {
        auto nl = text.find('\n');
        std::string_view line = text.substr(0, nl);
        text.remove_prefix(nl + 1);
        LineReader r(line, ++number);
        r.skip_blanks();
        if (r.done()) continue;
        if (r.peek() == '#') {
            r.expect('#');
            r.skip_blanks();
            std::string_view keyword = r.token();
            if (keyword != "HELP" && keyword != "TYPE") continue; // a comment
            r.skip_blanks();
            std::string name(r.name(true));
            PromFamily* f = out.families.empty() ? nullptr : &out.families.back();
            if (!f || f->name != name) {
                if (out.family(name)) r.fail("family " + name + " appears twice");
                out.families.push_back(PromFamily{name, "", "", {}});
                f = &out.families.back();
            }
            if (!f->samples.empty()) r.fail(std::string(keyword) + " after the family's samples");
            if (keyword == "HELP") {
                if (!help_seen.insert(name).second) r.fail("second HELP");
                if (r.peek() == ' ' || r.peek() == '\t') r.expect(r.peek());
                f->help = unescape_help(r.rest(), r);
            } else {
                if (!type_seen.insert(name).second) r.fail("second TYPE");
                r.skip_blanks();
                std::string type(r.token());
                if (type != "counter" && type != "gauge" && type != "histogram" && type != "summary" &&
                    type != "untyped")
                    r.fail("unknown type");
                r.skip_blanks();
                if (!r.done()) r.fail("text after the type");
                f->type = type;
            }
            continue;
        }
        PromSample s;
        s.name = std::string(r.name(true));
        if (r.peek() == '{') {
            r.expect('{');
            r.skip_blanks();
            while (r.peek() != '}') {
                std::string key(r.name(false));
                if (key.rfind("__", 0) == 0) r.fail("reserved label name");
                r.skip_blanks();
                r.expect('=');
                r.skip_blanks();
                std::string value = r.quoted();
                if (!s.labels.emplace(key, value).second) r.fail("label " + key + " twice");
                r.skip_blanks();
                if (r.peek() == ',') {
                    r.expect(',');
                    r.skip_blanks();
                } else if (r.peek() != '}') {
                    r.fail("expected ',' or '}'");
                }
            }
            r.expect('}');
        }
        if (r.peek() != ' ' && r.peek() != '\t') r.fail("no blank before the value");
        r.skip_blanks();
        s.value = parse_value(r.token(), r);
        r.skip_blanks();
        if (!r.done()) {
            std::string_view ts = r.token();
            if (ts.empty() || ts.find_first_not_of("-0123456789") != std::string_view::npos) r.fail("bad timestamp");
            r.skip_blanks();
            if (!r.done()) r.fail("text after the timestamp");
        }
        if (out.families.empty() || !belongs(out.families.back(), s.name))
            r.fail("a sample outside its family (no HELP/TYPE before it)");
        PromFamily& f = out.families.back();
        if (f.help.empty() && !help_seen.count(f.name)) r.fail("family " + f.name + " has no HELP");
        if (f.type.empty()) r.fail("family " + f.name + " has no TYPE");
        if (f.type == "counter" && (std::isnan(s.value) || s.value < 0)) r.fail("a negative counter");
        if (!seen.emplace(s.name, s.labels).second) r.fail("the same series twice");
        f.samples.push_back(std::move(s));
    }
    for (const auto& f : out.families) {
        if (!help_seen.count(f.name)) throw std::runtime_error("family " + f.name + " has no HELP");
        if (!type_seen.count(f.name)) throw std::runtime_error("family " + f.name + " has no TYPE");
        if (f.type == "counter" && !ends_with(f.name, "_total"))
            throw std::runtime_error("counter " + f.name + " does not end in _total");
        if (f.type == "histogram") check_histogram(f);
    }
    return out;
}

} // namespace foreman::test
