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

cat >&2 <<'MSG'
foreman runs in the foreground with etc/foreman.conf (Ctrl-C stops it).
In a second terminal, from this folder, try:
  build/bin/foremanctl status
  build/bin/foremanctl lease echo -- sh -c 'echo hello foreman; head -n 1 >&2'
(the second leases an echo worker, sends it a line and prints its answer)
MSG
exec build/bin/foreman --config etc/foreman.conf "$@"
