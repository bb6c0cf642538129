#!/usr/bin/env bash
# Stops what deploy/local/up.sh started (SIGTERM: gateways drain), then removes its state.
set -uo pipefail
STATE=${STRAIT_STATE:-/tmp/strait-local}
[ -f "$STATE/pids" ] || { echo "down.sh: nothing running from $STATE"; exit 0; }
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
