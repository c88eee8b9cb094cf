#!/usr/bin/env bash
# Sets up, builds and runs every test with ctest.
#
# usage: scripts/test.sh [asan|tsan]
#   (none)  build/       the normal tree, then build-fuzz/: the libFuzzer
#                        targets of fuzz/ (clang), 5 s each (label fuzz)
#   asan    build-asan/  AddressSanitizer + UndefinedBehaviorSanitizer
#   tsan    build-tsan/  ThreadSanitizer
# Fails when a test fails, and also when ctest finds no test at all.
# The 60 s fuzz runs (label fuzz-long) run only when asked for:
#   ctest --test-dir build-fuzz -L fuzz-long --output-on-failure
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

mode="${1:-}"
case "$mode" in
    "")
        build_dir=build
        flags=()
        ;;
    asan)
        build_dir=build-asan
        # GCC 12 with -fsanitize=address reports false -Wmaybe-uninitialized
        # in libstdc++'s <regex> (pulled in by Catch2), which -Werror fails.
        flags=(-DFOREMAN_ASAN=ON -DFOREMAN_BENCH=OFF -DCMAKE_CXX_FLAGS=-Wno-maybe-uninitialized)
        # Set before the build too: catch_discover_tests runs the test
        # binaries right after linking them.
        export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
        export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
        ;;
    tsan)
        build_dir=build-tsan
        flags=(-DFOREMAN_TSAN=ON -DFOREMAN_BENCH=OFF)
        export TSAN_OPTIONS="${TSAN_OPTIONS:-halt_on_error=1}"
        # GCC 12's TSan cannot map its shadow memory when the kernel
        # randomizes more than 28 bits of mmap addresses: run without ASLR.
        rnd_bits="$(cat /proc/sys/vm/mmap_rnd_bits 2>/dev/null || echo 0)"
        if [[ $rnd_bits -gt 28 && -z ${FOREMAN_TSAN_NO_ASLR:-} ]] && command -v setarch >/dev/null; then
            export FOREMAN_TSAN_NO_ASLR=1
            exec setarch "$(uname -m)" -R "$0" "$@"
        fi
        ;;
    *)
        echo "usage: scripts/test.sh [asan|tsan]" >&2
        exit 2
        ;;
esac

# ctest prints "No tests were found!!!" and exits 0 when there are none.
require_tests() {
    local count
    count="$(ctest --test-dir "$1" -N "${@:2}" | sed -n 's/^Total Tests: \([0-9]*\)$/\1/p')"
    if [[ -z "$count" || "$count" -eq 0 ]]; then
        echo "test: ctest found no tests in $1/" >&2
        exit 1
    fi
}

scripts/setup.sh "$build_dir" "${flags[@]}"
require_tests "$build_dir"

if [[ -n "$mode" ]]; then
    exec ctest --test-dir "$build_dir" --output-on-failure -j2 --timeout 300
fi

status=0
ctest --test-dir "$build_dir" --output-on-failure -j2 --timeout 300 || status=$?

# libFuzzer needs clang and a tree of its own (fuzz/CMakeLists.txt); it runs
# even when the main suite failed, so one run reports both.
scripts/setup.sh build-fuzz -DFOREMAN_FUZZ=ON -DCMAKE_C_COMPILER=clang-14 -DCMAKE_CXX_COMPILER=clang++-14
require_tests build-fuzz -LE fuzz-long
ctest --test-dir build-fuzz --output-on-failure -j2 -LE fuzz-long || status=$?
exit "$status"
