#!/usr/bin/env bash
# Sets up (installs what is missing, builds into build/), then runs the broker
# in the foreground with the example configuration etc/foreman.conf.
# Extra arguments go to foreman, e.g. scripts/run.sh --check-config
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

scripts/setup.sh

# etc/foreman.conf names its worker `foreman-echo` without a folder; the
# broker finds it on PATH. An absolute entry keeps working whatever the
# broker's working directory.
export PATH="$root/build/bin:$PATH"

echo "foreman: loads and checks etc/foreman.conf, then waits in the foreground (Ctrl-C stops it); control socket, workers and foremanctl are not there yet" >&2
exec build/bin/foreman --config etc/foreman.conf "$@"
