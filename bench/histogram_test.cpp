#include "bench/histogram.hpp"

#include <catch2/catch.hpp>

#include <random>

using foreman::bench::Histogram;

TEST_CASE("values below 2048 are counted exactly", "[histogram]") {
    Histogram h;
    for (std::uint64_t v = 0; v < 2048; ++v) h.record(v);
    CHECK(h.percentile(0.5) == 1023);
    CHECK(h.percentile(1.0) == 2047);
    CHECK(h.min() == 0);
}

TEST_CASE("every value is known to 3 significant digits", "[histogram]") {
    std::mt19937_64 rng(1);
    for (int i = 0; i < 100000; ++i) {
        std::uint64_t v = rng() >> (rng() % 64);
        auto idx = Histogram::index_of(v);
        INFO(v);
        REQUIRE(Histogram::lowest_of(idx) <= v);
        REQUIRE(v <= Histogram::highest_of(idx));
        REQUIRE(static_cast<double>(Histogram::highest_of(idx) - Histogram::lowest_of(idx)) <=
                static_cast<double>(v) / 1000.0 + 1.0);
    }
    CHECK(Histogram::index_of(2047) + 1 == Histogram::index_of(2048));
}

TEST_CASE("percentiles of a known distribution", "[histogram]") {
    Histogram h;
    for (std::uint64_t v = 1; v <= 100000; ++v) h.record(v * 1000); // 1 us .. 100 ms in ns
    auto near = [](std::uint64_t got, double want) { return std::abs(static_cast<double>(got) - want) <= want / 1000.0 + 1; };
    CHECK(near(h.percentile(0.5), 50'000'000.0));
    CHECK(near(h.percentile(0.9), 90'000'000.0));
    CHECK(near(h.percentile(0.99), 99'000'000.0));
    CHECK(near(h.percentile(0.999), 99'900'000.0));
    CHECK(h.percentile(1.0) == 100'000'000);
    CHECK(h.max() == 100'000'000);
    CHECK(h.count() == 100000);
}

TEST_CASE("values above the highest trackable are counted as the highest", "[histogram]") {
    Histogram h(1'000'000);
    h.record(5'000'000);
    CHECK(h.max() == 1'000'000);
    CHECK(h.percentile(1.0) == 1'000'000);
}

TEST_CASE("merging adds counts", "[histogram]") {
    Histogram a, b;
    a.record(10, 3);
    b.record(5000);
    a.merge(b);
    CHECK(a.count() == 4);
    CHECK(a.max() == 5000);
    CHECK(a.percentile(0.5) == 10);
}
