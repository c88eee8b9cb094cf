#include "bench/zipf.hpp"

#include <catch2/catch.hpp>

#include <random>
#include <vector>

using foreman::bench::ZipfDistribution;

TEST_CASE("Zipf probabilities fall as 1/k^s and sum to one") {
    ZipfDistribution z(4, 1.0);
    double h = 1 + 1.0 / 2 + 1.0 / 3 + 1.0 / 4;
    CHECK(z.probability(1) == Approx(1 / h));
    CHECK(z.probability(4) == Approx(0.25 / h));
    double sum = 0;
    for (int k = 1; k <= 4; ++k) sum += z.probability(k);
    CHECK(sum == Approx(1.0));
}

TEST_CASE("Zipf with exponent 0 is uniform") {
    ZipfDistribution z(5, 0.0);
    for (int k = 1; k <= 5; ++k) CHECK(z.probability(k) == Approx(0.2));
}

TEST_CASE("Zipf samples stay in range and follow the probabilities") {
    ZipfDistribution z(10, 1.2);
    std::mt19937_64 random(42);
    std::vector<int> seen(11, 0);
    const int draws = 200000;
    for (int i = 0; i < draws; ++i) {
        int k = z(random);
        REQUIRE(k >= 1);
        REQUIRE(k <= 10);
        ++seen[static_cast<std::size_t>(k)];
    }
    for (int k : {1, 2, 10})
        CHECK(static_cast<double>(seen[static_cast<std::size_t>(k)]) / draws == Approx(z.probability(k)).margin(0.005));
}

TEST_CASE("Zipf samples repeat for the same seed") {
    ZipfDistribution z(100, 1.0);
    std::mt19937_64 a(7), b(7);
    for (int i = 0; i < 1000; ++i) REQUIRE(z(a) == z(b));
}

TEST_CASE("Zipf refuses no ranks and a negative exponent") {
    CHECK_THROWS_AS(ZipfDistribution(0, 1.0), std::invalid_argument);
    CHECK_THROWS_AS(ZipfDistribution(3, -1.0), std::invalid_argument);
}
