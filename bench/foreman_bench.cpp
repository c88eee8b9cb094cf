// foreman-bench: what operators use to size pools and choose lease and
// heartbeat timeouts. `foreman-bench MODE --help` for each mode.

#include "bench/modes.hpp"

#include <cstdio>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

namespace {
void usage(std::FILE* out) {
    std::fputs("usage: foreman-bench MODE [OPTIONS]\n"
               "\n"
               "modes:\n"
               "  load     N clients loop LEASE -> request/response on the worker -> RELEASE;\n"
               "           prints throughput and latency percentiles\n"
               "  compare  the same echo work through a raw ideal broker, a spawn-per-connection\n"
               "           server (s6-ipcserver), and foreman cold and warm; prints ratios\n"
               "  tune     sweeps lease_ttl_ms and heartbeat settings under injected faults;\n"
               "           writes CSV and a PNG plot and recommends a setting\n"
               "  soak     a million lease cycles from 64 clients with faults injected; then checks\n"
               "           the broker's descriptors, memory, zombies and leases are back where they were\n"
               "  fairness light users' wait on a shared pool, alone and next to a greedy user\n"
               "\n"
               "foreman-bench MODE --help describes each mode's options.\n",
               out);
}
} // namespace

int main(int argc, char** argv) {
    if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    std::string mode = argv[1];
    std::vector<std::string> args(argv + 2, argv + argc);
    try {
        if (mode == "load") return foreman::bench::load_main(args);
        if (mode == "compare") return foreman::bench::compare_main(args);
        if (mode == "tune") return foreman::bench::tune_main(args);
        if (mode == "soak") return foreman::bench::soak_main(args);
        if (mode == "fairness") return foreman::bench::fairness_main(args);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "foreman-bench %s: %s\n", mode.c_str(), e.what());
        return 1;
    }
    std::fprintf(stderr, "foreman-bench: unknown mode '%s'\n", mode.c_str());
    usage(stderr);
    return 2;
}
