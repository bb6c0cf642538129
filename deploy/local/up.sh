#!/usr/bin/env bash
# Starts the two-domain topology of deploy/examples/two-domains as separate processes on
# loopback: per domain a controlplane (with its embedded registry), and 2 egress (alpha) or
# 2 ingress (beta) instances; plus the sample providers in beta. Prints one JSON line
# {"event":"ready",…} when every gateway is ready. deploy/local/down.sh stops all of it.
#
# State (binary, config copies, certificates, logs, pids) goes to $STRAIT_STATE
# (default /tmp/strait-local).
#
#   up.sh [--registry embedded|etcd|zookeeper|nacos] [--port-base N] [--port-offsets]
# With etcd, zookeeper or nacos, each domain gets its own registry server of that kind
# (installed on first use, as `make test` does) instead of the controlplane's embedded etcd.
#
# Every port it binds is derived from a base port, --port-base N or $STRAIT_PORT_BASE
# (default 17100: the ports of deploy/examples/two-domains, which the README documents):
#   base+0/1/2       alpha's controlplane: xDS, admin, gossip
#   base+10/11/12    alpha-egress-1: listen, admin, gossip   (base+20/21/22: alpha-egress-2)
#   base+100/101/102 beta's controlplane                     (base+110…, base+120…: ingress)
#   registries:      ZooKeeper base+50 (alpha), base+150 (beta); etcd base+70/71 and
#                    base+170/171; Nacos base+60 and base+160, each with its +1000, +1001
#                    and -1000
# --port-offsets prints those offsets (one a line, for the chosen registry kind) and exits:
# tests hold these ports free from a base they choose (test/ports), then release them and
# run up.sh with that base. The sample providers and the embedded registries take free
# ports of their own.
#
# STRAIT_BIN, if set, is the strait binary to run (built by the caller); otherwise up.sh
# builds one into the state directory.
set -euo pipefail
KIND=embedded
BASE=${STRAIT_PORT_BASE:-17100}
OFFSETS_ONLY=
while [ $# -gt 0 ]; do
  case "$1" in
    --registry) KIND=${2:-}; shift 2 ;;
    --registry=*) KIND=${1#*=}; shift ;;
    --port-base) BASE=${2:-}; shift 2 ;;
    --port-base=*) BASE=${1#*=}; shift ;;
    --port-offsets) OFFSETS_ONLY=1; shift ;;
    *) echo "up.sh: unknown argument $1 (use --registry embedded|etcd|zookeeper|nacos, --port-base N, --port-offsets)" >&2; exit 2 ;;
  esac
done
case "$KIND" in embedded|etcd|zookeeper|nacos) ;; *) echo "up.sh: --registry $KIND is not embedded, etcd, zookeeper or nacos" >&2; exit 2 ;; esac

# The controlplanes' and gateways' offsets, then the registry servers' (etcd: +1 is its
# peer port; Nacos: its gRPC ports +1000 and +1001 and its JRaft port -1000).
OFFSETS="0 1 2 10 11 12 20 21 22 100 101 102 110 111 112 120 121 122"
case "$KIND" in
  zookeeper) ALPHA_REG_OFF=50 BETA_REG_OFF=150 ;;
  nacos) ALPHA_REG_OFF=60 BETA_REG_OFF=160 ;;
  etcd) ALPHA_REG_OFF=70 BETA_REG_OFF=170 ;;
  *) ALPHA_REG_OFF= BETA_REG_OFF= ;;
esac
for off in $ALPHA_REG_OFF $BETA_REG_OFF; do
  case "$KIND" in
    zookeeper) OFFSETS+=" $off" ;;
    etcd) OFFSETS+=" $off $((off + 1))" ;;
    nacos) OFFSETS+=" $((off - 1000)) $off $((off + 1000)) $((off + 1001))" ;;
  esac
done
if [ -n "$OFFSETS_ONLY" ]; then
  tr ' ' '\n' <<< "$OFFSETS"
  exit 0
fi
if ! [[ $BASE =~ ^[0-9]+$ ]]; then
  echo "up.sh: port base $BASE is not a number" >&2; exit 2
fi
for off in $OFFSETS; do
  if (( BASE + off < 1024 || BASE + off > 65535 )); then
    echo "up.sh: port base $BASE puts port $((BASE + off)) outside 1024-65535" >&2; exit 2
  fi
done
# port OFFSET: the port at that offset from the base.
port() { echo $((BASE + $1)); }

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
STATE=${STRAIT_STATE:-/tmp/strait-local}
EX="$ROOT/deploy/examples/two-domains"

if [ -f "$STATE/pids" ]; then
  echo "up.sh: a topology is already running from $STATE; run deploy/local/down.sh first" >&2
  exit 1
fi
mkdir -p "$STATE"
echo "$BASE" > "$STATE/port-base"
if [ -n "${STRAIT_BIN:-}" ]; then
  BIN=$STRAIT_BIN
else
  BIN="$STATE/strait"
  (cd "$ROOT" && go build -o "$BIN" ./cmd/strait)
fi
# The example files with every 127.0.0.1:171xx/172xx moved by BASE-17100.
for f in "$EX"/*.yaml; do
  awk -v d=$((BASE - 17100)) '{
    out = ""; s = $0
    while (match(s, /127\.0\.0\.1:17[12][0-9][0-9]/)) {
      out = out substr(s, 1, RSTART - 1) "127.0.0.1:" (substr(s, RSTART + 10, 5) + d)
      s = substr(s, RSTART + RLENGTH)
    }
    print out s
  }' "$f" > "$STATE/$(basename "$f")"
done
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
# the domain file at it. A server that did not start (a Nacos whose embedded Derby timed out
# on a loaded machine) is tried once more, from an empty directory.
registry() {
  local dom=$1 port=$2
  if ! "$ROOT/test/registries/$KIND/start.sh" "$STATE/registry-$dom" "$port" >"$STATE/registry-$dom.log" 2>&1; then
    echo "up.sh: $KIND for $dom did not start, trying again: $(tail -n 3 "$STATE/registry-$dom.log")" >&2
    "$ROOT/test/registries/$KIND/stop.sh" "$STATE/registry-$dom" >/dev/null 2>&1 || true
    rm -rf "$STATE/registry-$dom"
    "$ROOT/test/registries/$KIND/start.sh" "$STATE/registry-$dom" "$port" >"$STATE/registry-$dom.log" 2>&1 \
      || fail "$KIND for $dom did not start: $(tail -n 5 "$STATE/registry-$dom.log")"
  fi
  echo "registry-$dom $KIND $STATE/registry-$dom" >> "$STATE/registries"
  sed -i "s|^  kind: embedded\$|  kind: $KIND\n  addresses: [\"127.0.0.1:$port\"]|" "$STATE/$dom.yaml"
}

: > "$STATE/registries"
SAMPLES_KIND=etcd
if [ "$KIND" != embedded ]; then
  registry alpha "$(port $ALPHA_REG_OFF)"
  registry beta "$(port $BETA_REG_OFF)"
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
  [alpha-controlplane-1]=127.0.0.1:$(port 1) [beta-controlplane-1]=127.0.0.1:$(port 101)
  [alpha-egress-1]=127.0.0.1:$(port 11) [alpha-egress-2]=127.0.0.1:$(port 21)
  [beta-ingress-1]=127.0.0.1:$(port 111) [beta-ingress-2]=127.0.0.1:$(port 121)
)
E=127.0.0.1:$(port 10)
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
  if [ "$(curl -s -m 1 -o /dev/null -w '%{http_code}' -d up "http://$E/echo/up")" = 200 ]; then ok=1; break; fi
  sleep 0.05
done
[ -n "$ok" ] || fail "no call went through within 20 s"

admin_json=; pid_json=
while read -r name pid; do
  pid_json+="${pid_json:+,}\"$name\":$pid"
  [ -n "${ADMIN[$name]:-}" ] && admin_json+="${admin_json:+,}\"$name\":\"${ADMIN[$name]}\""
done < "$STATE/pids"
printf '{"event":"ready","egress":"%s","ingress":["127.0.0.1:%s","127.0.0.1:%s"],' "$E" "$(port 110)" "$(port 120)"
printf '"services":{"grpc":{"service":"grpc.testing.TestService"},"triple":{"service":"strait.demo.greet.v1.GreetService","method":"Greet","body":{"name":"alpha"}},"http":{"url":"http://%s/echo/","host":""}},' "$E"
printf '"egress_instances":["%s","127.0.0.1:%s"],"admin":{%s},"pids":{%s},' "$E" "$(port 20)" "$admin_json" "$pid_json"
SCHEME=$([ "$KIND" = embedded ] && echo etcd || echo "$KIND")
printf '"registries":{"alpha":"%s://%s","beta":"%s://%s"},"state":"%s"}\n' "$SCHEME" "$ALPHA_REG" "$SCHEME" "$BETA_REG" "$STATE"
