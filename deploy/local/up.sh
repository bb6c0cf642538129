#!/usr/bin/env bash
# Starts the two-domain topology of deploy/examples/two-domains as separate processes on
# loopback: per domain a controlplane (with its embedded registry), and 2 egress (alpha) or
# 2 ingress (beta) instances; plus the sample providers in beta. Prints one JSON line
# {"event":"ready",…} when every gateway is ready. deploy/local/down.sh stops all of it.
#
# State (binary, config copies, certificates, logs, pids) goes to $STRAIT_STATE
# (default /tmp/strait-local).
#
#   up.sh [--registry embedded|etcd|zookeeper|nacos]
# With etcd, zookeeper or nacos, each domain gets its own registry server of that kind
# (installed on first use, as `make test` does) instead of the controlplane's embedded etcd.
set -euo pipefail
KIND=embedded
while [ $# -gt 0 ]; do
  case "$1" in
    --registry) KIND=${2:-}; shift 2 ;;
    --registry=*) KIND=${1#*=}; shift ;;
    *) echo "up.sh: unknown argument $1 (use --registry embedded|etcd|zookeeper|nacos)" >&2; exit 2 ;;
  esac
done
case "$KIND" in embedded|etcd|zookeeper|nacos) ;; *) echo "up.sh: --registry $KIND is not embedded, etcd, zookeeper or nacos" >&2; exit 2 ;; esac
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

# registry DOMAIN PORT: starts that domain's registry server (etcd, zookeeper or nacos) and points
# the domain file at it.
registry() {
  local dom=$1 port=$2
  "$ROOT/test/registries/$KIND/start.sh" "$STATE/registry-$dom" "$port" >"$STATE/registry-$dom.log" 2>&1 \
    || fail "$KIND for $dom did not start: $(tail -n 5 "$STATE/registry-$dom.log")"
  echo "registry-$dom $KIND $STATE/registry-$dom" >> "$STATE/registries"
  sed -i "s|^  kind: embedded\$|  kind: $KIND\n  endpoints: [\"127.0.0.1:$port\"]|" "$STATE/$dom.yaml"
}

: > "$STATE/registries"
SAMPLES_KIND=etcd
if [ "$KIND" != embedded ]; then
  case "$KIND" in
    zookeeper) ALPHA_PORT=17150 BETA_PORT=17250 ;;
    nacos) ALPHA_PORT=17160 BETA_PORT=17260 ;;
    etcd) ALPHA_PORT=17170 BETA_PORT=17270 ;; # and +1 for etcd's peer port
  esac
  registry alpha $ALPHA_PORT
  registry beta $BETA_PORT
  SAMPLES_KIND=$KIND
fi
start beta-controlplane-1 controlplane -c "$STATE/beta.yaml" --data-dir "$STATE/beta-registry"
BETA_REG=$(field "$(first_line beta-controlplane-1)" registry)
start beta-samples-1 samples -registry "$BETA_REG" -kind "$SAMPLES_KIND"
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

# Ready means callable: beta's providers must have reached its ingress (a registry that
# discovers new services by listing, like Nacos, takes a moment).
ok=
for _ in $(seq 1 400); do
  if [ "$(curl -s -m 1 -o /dev/null -w '%{http_code}' -d up http://127.0.0.1:17110/echo/up)" = 200 ]; then ok=1; break; fi
  sleep 0.05
done
[ -n "$ok" ] || fail "no call went through within 20 s"

admin_json=; pid_json=
while read -r name pid; do
  pid_json+="${pid_json:+,}\"$name\":$pid"
  [ -n "${ADMIN[$name]:-}" ] && admin_json+="${admin_json:+,}\"$name\":\"${ADMIN[$name]}\""
done < "$STATE/pids"
E=127.0.0.1:17110
printf '{"event":"ready","egress":"%s","ingress":["127.0.0.1:17210","127.0.0.1:17220"],' "$E"
printf '"services":{"grpc":{"service":"grpc.testing.TestService"},"triple":{"service":"strait.demo.greet.v1.GreetService","method":"Greet","body":{"name":"alpha"}},"http":{"url":"http://%s/echo/","host":""}},' "$E"
printf '"egress_instances":["127.0.0.1:17110","127.0.0.1:17120"],"admin":{%s},"pids":{%s},' "$admin_json" "$pid_json"
SCHEME=$([ "$KIND" = embedded ] && echo etcd || echo "$KIND")
printf '"registries":{"alpha":"%s://%s","beta":"%s://%s"},"state":"%s"}\n' "$SCHEME" "$ALPHA_REG" "$SCHEME" "$BETA_REG" "$STATE"
