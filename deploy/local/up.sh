#!/usr/bin/env bash
# Starts the two-domain topology of deploy/examples/two-domains as separate processes on
# loopback: per domain a controlplane (with its embedded registry), and 2 egress (alpha) or
# 2 ingress (beta) instances; plus the sample providers in beta. Prints one JSON line
# {"event":"ready",…} when every gateway is ready. deploy/local/down.sh stops all of it.
#
# State (binary, config copies, certificates, logs, pids) goes to $STRAIT_STATE
# (default /tmp/strait-local).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
STATE=${STRAIT_STATE:-/tmp/strait-local}
EX="$ROOT/deploy/examples/two-domains"

if [ -f "$STATE/pids" ]; then
  echo "up.sh: a topology is already running from $STATE; run deploy/local/down.sh first" >&2
  exit 1
fi
mkdir -p "$STATE"
BIN="$STATE/strait"
(cd "$ROOT" && go build -o "$BIN" ./cmd/strait)
cp "$EX"/*.yaml "$STATE/"
"$BIN" certs -o "$STATE/certs/alpha" -trust-domain alpha.strait.local -svid controlplane/controlplane-1 -svid egress/egress-1 -svid egress/egress-2 -gossip-key gossip-egress >/dev/null
"$BIN" certs -o "$STATE/certs/beta" -trust-domain beta.strait.local -svid controlplane/controlplane-1 -svid ingress/ingress-1 -svid ingress/ingress-2 -gossip-key gossip-ingress >/dev/null
: > "$STATE/pids"

fail() {
  echo "up.sh: $*" >&2
  "$ROOT/deploy/local/down.sh" >/dev/null 2>&1 || true
  exit 1
}

# start NAME ARGS...: runs the binary in the background, stdout to NAME.out, logs to NAME.log.
# Gateways run with GOMAXPROCS=$STRAIT_GATEWAY_GOMAXPROCS when that is set (benchmarks).
start() {
  local name=$1; shift
  case "$name" in
    *-egress-*|*-ingress-*) GOMAXPROCS=${STRAIT_GATEWAY_GOMAXPROCS:-$(nproc)} "$BIN" "$@" >"$STATE/$name.out" 2>"$STATE/$name.log" & ;;
    *) "$BIN" "$@" >"$STATE/$name.out" 2>"$STATE/$name.log" & ;;
  esac
  echo "$name $!" >> "$STATE/pids"
}

# first_line NAME: waits (10 s at most) for the process's first line of output.
first_line() {
  local name=$1
  for _ in $(seq 1 200); do
    if [ -s "$STATE/$name.out" ]; then head -n 1 "$STATE/$name.out"; return 0; fi
    if ! kill -0 "$(awk -v n="$name" '$1==n {print $2}' "$STATE/pids")" 2>/dev/null; then
      fail "$name exited: $(tail -n 3 "$STATE/$name.log")"
    fi
    sleep 0.05
  done
  fail "$name printed nothing within 10 s"
}

field() { sed -n "s/.*\"$2\":\"\\([^\"]*\\)\".*/\\1/p" <<< "$1"; }

start beta-controlplane-1 controlplane -c "$STATE/beta.yaml" --data-dir "$STATE/beta-registry"
BETA_REG=$(field "$(first_line beta-controlplane-1)" registry)
start beta-samples-1 samples -registry "$BETA_REG"
first_line beta-samples-1 >/dev/null
start beta-ingress-1 ingress -c "$STATE/beta-ingress-1.yaml"
start beta-ingress-2 ingress -c "$STATE/beta-ingress-2.yaml"
start alpha-controlplane-1 controlplane -c "$STATE/alpha.yaml" --data-dir "$STATE/alpha-registry"
ALPHA_REG=$(field "$(first_line alpha-controlplane-1)" registry)
start alpha-egress-1 egress -c "$STATE/alpha-egress-1.yaml"
start alpha-egress-2 egress -c "$STATE/alpha-egress-2.yaml"

declare -A ADMIN=(
  [alpha-controlplane-1]=127.0.0.1:17101 [beta-controlplane-1]=127.0.0.1:17201
  [alpha-egress-1]=127.0.0.1:17111 [alpha-egress-2]=127.0.0.1:17121
  [beta-ingress-1]=127.0.0.1:17211 [beta-ingress-2]=127.0.0.1:17221
)
for name in "${!ADMIN[@]}"; do
  ok=
  for _ in $(seq 1 200); do
    if curl -sf -m 1 "http://${ADMIN[$name]}/readyz" >/dev/null 2>&1; then ok=1; break; fi
    sleep 0.05
  done
  [ -n "$ok" ] || fail "$name not ready within 10 s: $(tail -n 3 "$STATE/$name.log")"
done

admin_json=; pid_json=
while read -r name pid; do
  pid_json+="${pid_json:+,}\"$name\":$pid"
  [ -n "${ADMIN[$name]:-}" ] && admin_json+="${admin_json:+,}\"$name\":\"${ADMIN[$name]}\""
done < "$STATE/pids"
E=127.0.0.1:17110
printf '{"event":"ready","egress":"%s","ingress":["127.0.0.1:17210","127.0.0.1:17220"],' "$E"
printf '"services":{"grpc":{"service":"grpc.testing.TestService"},"triple":{"service":"strait.demo.greet.v1.GreetService","method":"Greet","body":{"name":"alpha"}},"http":{"url":"http://%s/echo/","host":""}},' "$E"
printf '"egress_instances":["127.0.0.1:17110","127.0.0.1:17120"],"admin":{%s},"pids":{%s},' "$admin_json" "$pid_json"
printf '"registries":{"alpha":"etcd://%s","beta":"etcd://%s"},"state":"%s"}\n' "$ALPHA_REG" "$BETA_REG" "$STATE"
