#!/usr/bin/env bash
# Installs the Debian 12 packages foreman needs (only those missing), then
# configures and builds the project.
#
# usage: scripts/setup.sh [BUILD_DIR [CMAKE_FLAG...]]
#   BUILD_DIR defaults to build/ (relative to the project root); the flags are
#   passed to cmake after -DFOREMAN_WERROR=ON, e.g.
#   scripts/setup.sh build-asan -DFOREMAN_ASAN=ON -DFOREMAN_BENCH=OFF
# Silent when there is nothing to install and the build succeeds; on failure
# it prints the build log.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

build_dir="${1:-build}"
if [[ $# -gt 0 ]]; then shift; fi

packages=(
    build-essential cmake pkg-config
    # libboost1.81-all-dev does not pull in Boost.JSON: name it too.
    libboost1.81-all-dev libboost-json1.81-dev
    catch2 libsystemd-dev libbenchmark-dev
    socat redis-server s6 gnuplot-nox
    clang-14 libclang-rt-14-dev
)

missing=()
for pkg in "${packages[@]}"; do
    status="$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)"
    if [[ "$status" != "install ok installed" ]]; then missing+=("$pkg"); fi
done

if [[ ${#missing[@]} -gt 0 ]]; then
    echo "setup: installing ${missing[*]}"
    sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        if ! command -v sudo >/dev/null; then
            echo "setup: not root and no sudo: install these packages as root: ${missing[*]}" >&2
            exit 1
        fi
        sudo=(sudo)
    fi
    apt_log="$(mktemp -t foreman-apt.XXXXXX)"
    if ! { "${sudo[@]}" apt-get update -qq &&
           "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
               apt-get install -y -qq "${missing[@]}"; } \
           </dev/null >"$apt_log" 2>&1; then
        cat "$apt_log" >&2
        echo "setup: package installation failed (log above, kept in $apt_log)" >&2
        exit 1
    fi
    rm -f "$apt_log"
fi

mkdir -p "$build_dir"
log="$build_dir/setup.log"
if [[ ! -f "$build_dir/CMakeCache.txt" ]]; then
    echo "setup: first build in $build_dir/ takes a few minutes (log: $log)"
fi
if ! { cmake -S . -B "$build_dir" -DFOREMAN_WERROR=ON "$@" &&
       cmake --build "$build_dir" -j"$(nproc)"; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "setup: build in $build_dir/ failed (log above, kept in $log)" >&2
    exit 1
fi
