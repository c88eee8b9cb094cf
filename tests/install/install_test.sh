#!/usr/bin/env bash
# Installs the build tree into a temporary prefix, starts the installed
# broker with an echo pool, and builds and runs two consumers against the
# installed files: a C++ one with find_package(foreman) and a C one with
# pkg-config. Each leases from the broker and checks a connect error.
#
# usage: install_test.sh BUILD_DIR CMAKE CC CXX [SANITIZER_FLAGS]
set -euo pipefail

build_dir="$1" cmake="$2" cc="$3" cxx="$4" san="${5:-}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

work="$(mktemp -d -t foreman-install.XXXXXX)"
broker_pid=""
cleanup() {
    if [[ -n $broker_pid ]]; then
        kill -TERM "$broker_pid" 2>/dev/null || true
        wait "$broker_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

fail() {
    echo "install_test: $*" >&2
    for log in "$work"/*.log; do
        [[ -f $log ]] && { echo "--- $log" >&2; tail -n 40 "$log" >&2; }
    done
    exit 1
}

prefix="$work/prefix"
"$cmake" --install "$build_dir" --prefix "$prefix" >"$work/install.log" 2>&1 || fail "cmake --install failed"

for f in bin/foreman bin/foremanctl bin/foreman-echo include/foreman/foreman.h \
         include/foreman/client/connection.hpp include/foreman/protocol/control_line.hpp \
         include/foreman/spawn/unique_fd.hpp lib/libforeman.so lib/libforeman_client.a \
         lib/libforeman_protocol.a lib/libforeman_spawn.a lib/cmake/foreman/foremanConfig.cmake \
         lib/pkgconfig/foreman.pc etc/foreman/foreman.conf lib/systemd/system/foreman.service \
         lib/systemd/system/foreman.socket; do
    [[ -e $prefix/$f ]] || fail "$f was not installed"
done

# The installed broker, with the installed worker.
mkdir -p "$work/run"
cat >"$work/foreman.conf" <<CONF
runtime_dir = $work/run
[pool.echo]
path = $prefix/bin/foreman-echo
CONF
socket="$work/run/foreman.sock"
"$prefix/bin/foreman" --config "$work/foreman.conf" 2>"$work/foreman.log" &
broker_pid=$!
deadline=$((SECONDS + 30))
until "$prefix/bin/foremanctl" --socket "$socket" status >/dev/null 2>&1; do
    kill -0 "$broker_pid" 2>/dev/null || fail "the installed foreman exited"
    (( SECONDS < deadline )) || fail "the installed foreman did not answer within 30 s"
    sleep 0.05
done
missing="$work/no-broker.sock"

# C++: find_package(foreman) with CMAKE_PREFIX_PATH.
"$cmake" -S "$here/cxx_consumer" -B "$work/cxx" -DCMAKE_PREFIX_PATH="$prefix" \
    -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_CXX_FLAGS="$san" -DCMAKE_EXE_LINKER_FLAGS="$san" \
    >"$work/cxx-configure.log" 2>&1 || fail "configuring the C++ consumer failed"
"$cmake" --build "$work/cxx" >"$work/cxx-build.log" 2>&1 || fail "building the C++ consumer failed"
"$work/cxx/cxx_consumer" "$socket" "$missing" || fail "the C++ consumer failed"

# C: pkg-config with PKG_CONFIG_PATH, strict C11.
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
cflags="$(pkg-config --cflags foreman)" || fail "pkg-config --cflags foreman failed"
libs="$(pkg-config --libs foreman)" || fail "pkg-config --libs foreman failed"
libdir="$(pkg-config --variable=libdir foreman)"
# shellcheck disable=SC2086 # the flags are words
"$cc" -std=c11 -Wall -Wextra -Werror -pedantic $san $cflags "$here/c_consumer/main.c" -o "$work/c_consumer" \
    $libs -Wl,-rpath,"$libdir" >"$work/c-build.log" 2>&1 || fail "building the C consumer failed"
"$work/c_consumer" "$socket" "$missing" || fail "the C consumer failed"

# Both leases were granted and released by the installed broker.
status="$("$prefix/bin/foremanctl" --socket "$socket" status)"
grep -q "leases granted 2" <<<"$status" || fail "expected 2 leases granted, status says: $status"
kill -TERM "$broker_pid"
wait "$broker_pid" || fail "the installed foreman did not exit 0 on SIGTERM"
broker_pid=""
echo "install_test: installed to a prefix; C++ (find_package) and C (pkg-config) consumers leased from it"
