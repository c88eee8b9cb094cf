#pragma once
// A strict reader of the Prometheus text exposition format 0.0.4, for tests:
// it checks what a scraper relies on (a HELP and a TYPE line for every
// family before its samples, name and label syntax, escapes, values, no
// duplicate series, histogram buckets ascending and cumulative with +Inf
// equal to _count) and gives the values back by name and labels.

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace foreman::test {

using Labels = std::map<std::string, std::string>;

struct PromSample {
    std::string name; ///< as written, e.g. foo_bucket
    Labels labels;
    double value;
};

struct PromFamily {
    std::string name;
    std::string type; ///< counter, gauge, histogram, summary, untyped
    std::string help; ///< unescaped
    std::vector<PromSample> samples;
};

struct PromText {
    std::vector<PromFamily> families;

    const PromFamily* family(std::string_view name) const;
    /// The value of series `name{labels}` (labels exactly), if present.
    std::optional<double> value(std::string_view name, const Labels& labels = {}) const;
    /// The sum over the series of `name` whose labels include `match`.
    double sum(std::string_view name, const Labels& match = {}) const;
};

/// Parses `text`; throws std::runtime_error naming the line and the rule broken.
PromText parse_prometheus_text(std::string_view text);

} // namespace foreman::test
