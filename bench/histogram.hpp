#pragma once
// A log-linear histogram in the manner of HdrHistogram with 3 significant
// digits: values below 2048 are counted exactly; above, each power of two is
// cut into 1024 equal sub-buckets, so any value is known to within 1/1024
// (0.1 %). Recording is an index computation and an increment; percentiles
// walk the counts. Values are unsigned integers (nanoseconds, say).

#include <algorithm>
#include <bit>
#include <cstdint>
#include <vector>

namespace foreman::bench {

class Histogram {
public:
    static constexpr int sub_bucket_bits = 11;                  ///< 2048 exact values
    static constexpr std::uint64_t sub_buckets = 1u << sub_bucket_bits;
    static constexpr std::uint64_t half = sub_buckets / 2;

    /// Values above `highest` are counted as `highest` (the default, 2^40,
    /// is 18 minutes in nanoseconds); the counters take 8 bytes per index
    /// up to index_of(highest).
    explicit Histogram(std::uint64_t highest = std::uint64_t{1} << 40)
        : highest_(highest), counts_(index_of(highest) + 1, 0) {}

    void record(std::uint64_t value, std::uint64_t count = 1) {
        value = std::min(value, highest_);
        counts_[index_of(value)] += count;
        total_ += count;
        max_ = std::max(max_, value);
        min_ = std::min(min_, value);
    }
    /// Adds `other`'s counts (recorded with the same `highest`).
    void merge(const Histogram& other) {
        for (std::size_t i = 0; i < std::min(counts_.size(), other.counts_.size()); ++i) counts_[i] += other.counts_[i];
        total_ += other.total_;
        max_ = std::max(max_, other.max_);
        min_ = std::min(min_, other.min_);
    }

    std::uint64_t count() const { return total_; }
    std::uint64_t max() const { return total_ ? max_ : 0; }
    std::uint64_t min() const { return total_ ? min_ : 0; }

    /// The value at or below which `q` (0..1) of the recorded values lie: the
    /// highest value of the bucket holding that rank (never above max()).
    std::uint64_t percentile(double q) const {
        if (total_ == 0) return 0;
        auto rank = static_cast<std::uint64_t>(q * static_cast<double>(total_) + 0.5);
        rank = std::clamp<std::uint64_t>(rank, 1, total_);
        std::uint64_t seen = 0;
        for (std::size_t i = 0; i < counts_.size(); ++i) {
            seen += counts_[i];
            if (seen >= rank) return std::min(highest_of(i), max_);
        }
        return max_;
    }

    /// Which counter `value` goes to.
    static std::size_t index_of(std::uint64_t value) {
        if (value < sub_buckets) return static_cast<std::size_t>(value);
        int shift = std::bit_width(value) - sub_bucket_bits; // value >> shift is in [1024, 2048)
        return static_cast<std::size_t>(sub_buckets + (shift - 1) * half + ((value >> shift) - half));
    }
    /// The lowest and highest values counted by counter `i`.
    static std::uint64_t lowest_of(std::size_t i) {
        if (i < sub_buckets) return i;
        std::uint64_t k = i - sub_buckets;
        int shift = static_cast<int>(k / half) + 1;
        return (half + k % half) << shift;
    }
    static std::uint64_t highest_of(std::size_t i) {
        if (i < sub_buckets) return i;
        std::uint64_t k = i - sub_buckets;
        int shift = static_cast<int>(k / half) + 1;
        return lowest_of(i) + (std::uint64_t{1} << shift) - 1;
    }

private:
    std::uint64_t highest_;
    std::vector<std::uint64_t> counts_;
    std::uint64_t total_ = 0;
    std::uint64_t max_ = 0;
    std::uint64_t min_ = ~std::uint64_t{0};
};

} // namespace foreman::bench
