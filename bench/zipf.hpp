#pragma once
// Zipf(s) over ranks 1..n: rank k is drawn with probability proportional to
// 1/k^s (s = 0: uniform). Which users a shared pool sees: a few often, many
// rarely. Sampling is a binary search of the cumulative weights.

#include <algorithm>
#include <cmath>
#include <random>
#include <stdexcept>
#include <vector>

namespace foreman::bench {

class ZipfDistribution {
public:
    ZipfDistribution(int n, double s) {
        if (n < 1) throw std::invalid_argument("Zipf needs at least 1 rank");
        if (!(s >= 0) || !std::isfinite(s)) throw std::invalid_argument("Zipf exponent must be finite and >= 0");
        cumulative_.reserve(static_cast<std::size_t>(n));
        double sum = 0;
        for (int k = 1; k <= n; ++k) cumulative_.push_back(sum += 1.0 / std::pow(static_cast<double>(k), s));
        for (double& c : cumulative_) c /= sum;
        cumulative_.back() = 1.0; // no rank lost to rounding
    }

    int ranks() const { return static_cast<int>(cumulative_.size()); }

    /// P(rank k), k in 1..ranks().
    double probability(int k) const {
        auto i = static_cast<std::size_t>(k - 1);
        return cumulative_[i] - (i == 0 ? 0.0 : cumulative_[i - 1]);
    }

    /// A rank in 1..ranks().
    template <class Random>
    int operator()(Random& random) const {
        double u = std::uniform_real_distribution<double>(0.0, 1.0)(random);
        auto it = std::upper_bound(cumulative_.begin(), cumulative_.end(), u);
        return static_cast<int>(std::min<std::ptrdiff_t>(it - cumulative_.begin(), ranks() - 1)) + 1;
    }

private:
    std::vector<double> cumulative_;
};

} // namespace foreman::bench
