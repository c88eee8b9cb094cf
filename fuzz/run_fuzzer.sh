#!/usr/bin/env bash
# Runs one libFuzzer target for SECONDS seconds, starting from the committed
# seed corpus, without ever writing into the repository: the inputs it finds
# go to a temporary corpus (libFuzzer writes into its first corpus folder),
# crash inputs to a temporary artifacts folder that is kept, and named, when
# the run fails.
#
# usage: fuzz/run_fuzzer.sh FUZZER SEED_DIR DICT SECONDS [MAX_LEN]
#   MAX_LEN caps the input size (seeds are cut to it); without it the largest
#   seed sets the cap. Short runs cap it: small inputs run many times faster.
set -euo pipefail

if [[ $# -lt 4 || $# -gt 5 ]]; then
    echo "usage: run_fuzzer.sh FUZZER SEED_DIR DICT SECONDS [MAX_LEN]" >&2
    exit 2
fi
fuzzer="$1" seeds="$2" dict="$3" seconds="$4" max_len="${5:-0}"

work="$(mktemp -d -t foreman-fuzz.XXXXXX)"
mkdir "$work/corpus" "$work/artifacts"

# -timeout: an input that takes 30 s (a loaded machine included) is a hang
# worth a crash file.
if "$fuzzer" -max_total_time="$seconds" -timeout=30 -max_len="$max_len" -print_final_stats=1 \
        -dict="$dict" -artifact_prefix="$work/artifacts/" \
        "$work/corpus" "$seeds" >"$work/log" 2>&1; then
    # The last status line (execs, coverage, corpus) and the final stats.
    grep -E '^#[0-9]+' "$work/log" | tail -n 1
    grep -E '^stat::' "$work/log" || true
    rm -rf "$work"
    exit 0
fi

tail -n 80 "$work/log"
echo "run_fuzzer: $(basename "$fuzzer") failed; its log and crash inputs are kept in $work/" >&2
for crash in "$work"/artifacts/*; do
    [[ -e $crash ]] && echo "run_fuzzer: reproduce with: $fuzzer $crash" >&2
done
exit 1
