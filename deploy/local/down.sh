#!/usr/bin/env bash
# Stops what deploy/local/up.sh started (SIGTERM: gateways drain), then removes its state.
#
#   down.sh [--port-base N]
# What runs is found from $STRAIT_STATE (default /tmp/strait-local), whatever its ports:
# the port base (--port-base N or $STRAIT_PORT_BASE, as given to up.sh) is only checked
# against the one the state records.
set -uo pipefail
STATE=${STRAIT_STATE:-/tmp/strait-local}
BASE=${STRAIT_PORT_BASE:-}
while [ $# -gt 0 ]; do
  case "$1" in
    --port-base) BASE=${2:-}; shift 2 ;;
    --port-base=*) BASE=${1#*=}; shift ;;
    *) echo "down.sh: unknown argument $1 (use --port-base N)" >&2; exit 2 ;;
  esac
done
[ -f "$STATE/pids" ] || { echo "down.sh: nothing running from $STATE"; exit 0; }
if [ -n "$BASE" ] && [ -f "$STATE/port-base" ] && [ "$(cat "$STATE/port-base")" != "$BASE" ]; then
  echo "down.sh: the topology in $STATE runs on port base $(cat "$STATE/port-base"), not $BASE; stopping it all the same" >&2
fi
# Reverse order of start: egress, alpha controlplane, ingress, samples, beta controlplane.
tac "$STATE/pids" | while read -r name pid; do
  kill -TERM "$pid" 2>/dev/null || true
done
for _ in $(seq 1 400); do
  alive=
  while read -r name pid; do kill -0 "$pid" 2>/dev/null && alive=1; done < "$STATE/pids"
  [ -z "$alive" ] && break
  sleep 0.05
done
while read -r name pid; do
  if kill -0 "$pid" 2>/dev/null; then echo "down.sh: $name ($pid) did not stop in 20 s; killing" >&2; kill -KILL "$pid" 2>/dev/null; fi
done < "$STATE/pids"
# Then the registry servers up.sh started, if any.
if [ -f "$STATE/registries" ]; then
  ROOT=$(cd "$(dirname "$0")/../.." && pwd)
  while read -r name kind dir; do
    "$ROOT/test/registries/$kind/stop.sh" "$dir" >/dev/null 2>&1 || echo "down.sh: could not stop $name" >&2
  done < "$STATE/registries"
fi
rm -rf "$STATE"
echo "down.sh: stopped"
