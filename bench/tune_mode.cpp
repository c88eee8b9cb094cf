// foreman-bench tune (to be written).
#include "bench/modes.hpp"

#include <cstdio>

namespace foreman::bench {
int tune_main(const std::vector<std::string>&) {
    std::fprintf(stderr, "foreman-bench tune: not written yet\n");
    return 2;
}
} // namespace foreman::bench
