#pragma once
// A property that must hold for every input: when it does not, say which one
// and abort, so libFuzzer stops and keeps the input as a crash file.

#include <cstdio>
#include <cstdlib>

#define FUZZ_CHECK(condition)                                                                             \
    do {                                                                                                  \
        if (!(condition)) {                                                                               \
            std::fprintf(stderr, "%s:%d: property failed: %s\n", __FILE__, __LINE__, #condition);          \
            std::abort();                                                                                 \
        }                                                                                                 \
    } while (0)
