// foreman-bench compare (to be written).
#include "bench/modes.hpp"

#include <cstdio>

namespace foreman::bench {
int compare_main(const std::vector<std::string>&) {
    std::fprintf(stderr, "foreman-bench compare: not written yet\n");
    return 2;
}
} // namespace foreman::bench
