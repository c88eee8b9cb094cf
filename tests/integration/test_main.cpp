// The integration tests' main: the binary is also the misbehaving worker.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "test_worker.hpp"

int main(int argc, char** argv) {
    int worker = foreman::test::run_test_worker(argc, argv);
    if (worker >= 0) return worker;
    return Catch::Session().run(argc, argv);
}
