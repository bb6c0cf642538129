#!/usr/bin/env bash
# make bench [QUICK=1]: Strait against two chained nginx and two chained HAProxy, in one run
# with the same providers (beta's samples from deploy/local/up.sh: gRPC interop TestService,
# Triple GreetService, HTTP echo; and for the classic Dubbo protocol the real dubbo-go
# v3.3.2 EchoService provider of test/dubbogo, which this script builds, starts on
# 127.0.0.1:17330 and registers in beta's registry through loadtest/dubboprovider, and
# exports by adding it to the beta domain file up.sh runs). Targets:
#   direct:  consumer → provider
#   strait:  consumer → alpha-egress-1 → mTLS tunnel → beta-ingress-1 → provider
#            (up.sh's topology, GOMAXPROCS=1 per gateway; the second egress and ingress are
#            stopped so that each hop is one process, as in the other chains)
#   nginx:   consumer → nginx hop1 (h2c / HTTP/1.1) → TLS 1.3 + client certificate → nginx
#            hop2 → provider; worker_processes 1, grpc_pass / proxy_pass, upstream keepalive
#   haproxy: the same with HAProxy, mode http, nbthread 1, ssl verify required + crt; for
#            Dubbo mode tcp (a TCP relay, TLS with client certificates between the hops)
# nginx has no Dubbo row (its stream module is not in Debian's nginx package).
# Protocols gRPC unary, gRPC bidi, Triple gRPC mode, Triple HTTP/1.1 JSON, HTTP/1.1 and
# Dubbo, payloads 1 KiB and 64 KiB, open loop at 1,000 calls/s and max throughput (4
# connections × 20 streams or requests in flight). QUICK=1 measures gRPC unary 1 KiB, Dubbo
# 1 KiB and a few others only (it says which).
#
# Writes loadtest/results/latest.json (one object per measurement), latest.svg (the plot)
# and pprof CPU/allocation profiles of one egress and one ingress (gRPC unary and Dubbo
# runs); prints a table and the summary of issue 5's figures. Installs nginx and haproxy
# from Debian's packages if they are missing (their system services are not started); runs
# its own instances from a temp directory on loopback ports 17310-17325 and 17330 and stops
# everything it started on exit. Uses up.sh's fixed ports: run it under
# `flock /tmp/strait-ports.lock` on a shared machine.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
OUT="$ROOT/loadtest/results"
CHAINS="$ROOT/loadtest/chains"

# Ports of the proxy chains (loopback): hop1 h2c / HTTP/1.1, hop2 TLS h2 / TLS HTTP/1.1.
NGINX_HOP1_H2=17310 NGINX_HOP1_H1=17311 NGINX_HOP2_H2=17312 NGINX_HOP2_H1=17313
HAPROXY_HOP1_H2=17320 HAPROXY_HOP1_H1=17321 HAPROXY_HOP2_H2=17322 HAPROXY_HOP2_H1=17323
# HAProxy's TCP relay for Dubbo (hop1 plaintext, hop2 TLS), and the dubbo-go provider.
HAPROXY_HOP1_DUBBO=17324 HAPROXY_HOP2_DUBBO=17325 DUBBO=127.0.0.1:17330

say() { echo "bench: $*" >&2; }
die() { say "$*"; exit 1; }

# install_proxies: nginx and haproxy from Debian's packages, quietly, only if missing,
# without letting the packages start their system services.
install_proxies() {
  command -v nginx >/dev/null 2>&1 && command -v haproxy >/dev/null 2>&1 && return 0
  local sudo=
  [ "$(id -u)" = 0 ] || sudo=sudo
  say "installing nginx and haproxy (Debian packages)"
  local policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
    $sudo chmod +x /usr/sbin/policy-rc.d
    policy=1
  fi
  local rc=0
  { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq nginx haproxy; } \
    >/tmp/strait-bench-apt.log 2>&1 || rc=$?
  [ -n "$policy" ] && $sudo rm -f /usr/sbin/policy-rc.d
  [ "$rc" = 0 ] || die "apt-get install nginx haproxy failed: $(tail -n 5 /tmp/strait-bench-apt.log)"
  # Should a service have started anyway (a system with systemd), stop and disable it.
  for s in nginx haproxy; do
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$s" 2>/dev/null; then
      $sudo systemctl stop "$s" || true
      $sudo systemctl disable --quiet "$s" 2>/dev/null || true
    fi
  done
}
install_proxies
NGINX=$(command -v nginx) HAPROXY=$(command -v haproxy)

WORK=$(mktemp -d /tmp/strait-bench.XXXXXX)
export STRAIT_STATE="$WORK/state" STRAIT_GATEWAY_GOMAXPROCS=1
PROXY_PIDS=()
DUBBO_HELPER= DUBBO_PID=
cleanup() {
  local p
  # DUBBO_HELPER owns the dubbo-go provider: on TERM it deregisters it and stops it (the
  # provider also exits when the helper dies, at EOF on its stdin); one still running
  # after that (DUBBO_PID) is killed.
  for p in "${PROXY_PIDS[@]}" $DUBBO_HELPER; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PROXY_PIDS[@]}" $DUBBO_HELPER $DUBBO_PID; do
    for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
    kill -KILL "$p" 2>/dev/null || true
  done
  STRAIT_PORT_BASE= deploy/local/down.sh >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "building"
go build -o "$WORK/load" ./loadtest/load
go build -o "$WORK/bench" ./loadtest/bench
go build -o "$WORK/plot" ./loadtest/plot
go build -o "$WORK/dubboprovider" ./loadtest/dubboprovider
# test/dubbogo/prog is a module of its own (dubbo-go's dubbo transport is not in Strait's).
(cd test/dubbogo/prog && GOWORK=off go build -o "$WORK/dubbogo" .) >"$WORK/dubbogo-build.log" 2>&1 \
  || die "building test/dubbogo/prog failed (make deps fetches its modules): $(tail -n 5 "$WORK/dubbogo-build.log")"

say "starting the two-domain topology (deploy/local/up.sh, gateways GOMAXPROCS=1)"
# The ports below are up.sh's defaults: the topology runs on its default base.
STRAIT_PORT_BASE= deploy/local/up.sh --port-base 17100 > "$WORK/ready.json"
pid_of() { awk -v n="$1" '$1==n {print $2}' "$STRAIT_STATE/pids"; }
# One process per hop, like the other chains: stop the second egress and ingress (they
# drain and leave the gossip cluster; the egress then uses beta-ingress-1 only).
for name in alpha-egress-2 beta-ingress-2; do kill -TERM "$(pid_of "$name")"; done
for name in alpha-egress-2 beta-ingress-2; do
  p=$(pid_of "$name")
  for _ in $(seq 1 400); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
  kill -0 "$p" 2>/dev/null && die "$name did not stop"
done

field() { sed -n "s/.*\"$1\":\"\\([^\"]*\\)\".*/\\1/p" "$STRAIT_STATE/beta-samples-1.out"; }
GRPC=$(field grpc) TRIPLE=$(field triple) HTTP=$(field http)
[ -n "$GRPC" ] && [ -n "$TRIPLE" ] && [ -n "$HTTP" ] || die "no provider addresses in beta-samples-1.out"

if [ -n "${GOVERN:-}" ]; then
  # GOVERN=1: ten governance policies on each side that match every call but never limit
  # (the cost of deciding them); compare with a run without.
  say "configuring ten non-limiting governance policies on alpha's egress and beta's ingress"
  for side in alpha:egress beta:ingress; do
    f="$STRAIT_STATE/${side%%:*}.yaml" gw=${side##*:}
    cat "$f" - > "$f.new" <<YAML
governance:
  rateLimits:
    - {name: bench-rl-1, gateway: $gw, rate: 10000000, burst: 10000000}
    - {name: bench-rl-2, gateway: $gw, by: [peer], rate: 10000000, burst: 10000000}
    - {name: bench-rl-3, gateway: $gw, by: [peer, method], rate: 10000000, burst: 10000000}
    - {name: bench-rl-4, gateway: $gw, match: {service: "*"}, rate: 10000000, burst: 10000000, scope: local}
  concurrency:
    - {name: bench-cc-1, gateway: $gw, max: 1000000}
    - {name: bench-cc-2, gateway: $gw, match: {service: "*"}, max: 1000000}
    - {name: bench-cc-3, gateway: $gw, match: {method: Nope}, max: 1}
  breakers:
    - {name: bench-br-1, gateway: $gw, errorRatio: 0.99, minCalls: 1000000}
    - {name: bench-br-2, gateway: $gw, slowRatio: 0.99, slowCall: 10s, minCalls: 1000000}
    - {name: bench-br-3, gateway: $gw, errorCount: 1000000}
YAML
    mv "$f.new" "$f"
  done
  for _ in $(seq 1 600); do # 30 s
    curl -fsS http://127.0.0.1:17111/debug/config 2>/dev/null | grep -q bench-br-3 && break
    sleep 0.05
  done
  curl -fsS http://127.0.0.1:17111/debug/config | grep -q bench-br-3 || die "alpha's egress did not take the governance policies"
fi

say "starting the dubbo-go provider, exporting it from beta"
# Beta exports EchoService with protocol dubbo: the line is added to the domain file beta's
# controlplane runs (up.sh's copy in the state directory), which it watches and applies.
# The file is replaced by a rename, as editors do, so it is never read half-written.
BETA_FILE="$STRAIT_STATE/beta.yaml"
sed '/^exports:$/a\  - {service: org.apache.dubbo.strait.EchoService, protocol: dubbo, to: [alpha]}' \
  "$BETA_FILE" > "$BETA_FILE.new"
grep -q 'org.apache.dubbo.strait.EchoService, protocol: dubbo' "$BETA_FILE.new" || die "no exports: list in $BETA_FILE"
mv "$BETA_FILE.new" "$BETA_FILE"
# loadtest/dubboprovider runs the provider, registers it in beta's registry (up.sh's
# embedded etcd) and prints its ready line once a call through alpha's egress comes back.
BETA_REG=$(sed -n 's/.*"beta":"[a-z]*:\/\/\([^"]*\)".*/\1/p' "$WORK/ready.json")
[ -n "$BETA_REG" ] || die "no beta registry in up.sh's ready line"
"$WORK/dubboprovider" -prog "$WORK/dubbogo" -addr "$DUBBO" -registry "$BETA_REG" -kind etcd \
  -via 127.0.0.1:17110 >"$WORK/dubboprovider.out" 2>"$WORK/dubboprovider.log" &
DUBBO_HELPER=$!
for _ in $(seq 1 1800); do # 90 s: the provider's start and the export's way to alpha's egress
  DUBBO_PID=$(sed -n 's/.*"event":"ready".*"pid":\([0-9]*\).*/\1/p' "$WORK/dubboprovider.out")
  [ -n "$DUBBO_PID" ] && break
  kill -0 "$DUBBO_HELPER" 2>/dev/null || die "the dubbo provider did not come up: $(tail -n 5 "$WORK/dubboprovider.log"); beta's controlplane: $(grep -i 'domain file' "$STRAIT_STATE/beta-controlplane-1.log" | tail -n 2)"
  sleep 0.05
done
[ -n "$DUBBO_PID" ] || die "the dubbo provider was not callable through the egress within 90 s: $(tail -n 5 "$WORK/dubboprovider.log")"

# Certificates for the proxy chains: one CA, hop2's server certificate (DNS
# hop2.bench.local), hop1's client certificate; ECDSA P-256 like Strait's SVIDs.
C="$WORK/certs"
mkdir -p "$C"
(
  cd "$C"
  openssl ecparam -name prime256v1 -genkey -noout -out ca-key.pem
  openssl req -x509 -new -key ca-key.pem -days 2 -subj "/CN=bench CA" -out ca.pem
  for h in hop1 hop2; do
    openssl ecparam -name prime256v1 -genkey -noout -out "$h-key.pem"
    openssl req -new -key "$h-key.pem" -subj "/CN=$h.bench.local" -out "$h.csr"
    if [ "$h" = hop2 ]; then ext="subjectAltName=DNS:hop2.bench.local,IP:127.0.0.1
extendedKeyUsage=serverAuth"; else ext="extendedKeyUsage=clientAuth"; fi
    openssl x509 -req -in "$h.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 2 \
      -extfile <(echo "$ext") -out "$h.pem"
    cat "$h.pem" "$h-key.pem" > "$h-full.pem"
  done
) >"$WORK/certs.log" 2>&1 || die "openssl: $(tail -n 5 "$WORK/certs.log")"

render() { # render TEMPLATE OUT
  sed -e "s|@DIR@|$WORK|g" -e "s|@GRPC@|$GRPC|g" -e "s|@TRIPLE@|$TRIPLE|g" -e "s|@HTTP@|$HTTP|g" -e "s|@DUBBO@|$DUBBO|g" \
    -e "s|@NGINX_HOP1_H2@|$NGINX_HOP1_H2|g" -e "s|@NGINX_HOP1_H1@|$NGINX_HOP1_H1|g" \
    -e "s|@NGINX_HOP2_H2@|$NGINX_HOP2_H2|g" -e "s|@NGINX_HOP2_H1@|$NGINX_HOP2_H1|g" \
    -e "s|@HAPROXY_HOP1_H2@|$HAPROXY_HOP1_H2|g" -e "s|@HAPROXY_HOP1_H1@|$HAPROXY_HOP1_H1|g" \
    -e "s|@HAPROXY_HOP2_H2@|$HAPROXY_HOP2_H2|g" -e "s|@HAPROXY_HOP2_H1@|$HAPROXY_HOP2_H1|g" \
    -e "s|@HAPROXY_HOP1_DUBBO@|$HAPROXY_HOP1_DUBBO|g" -e "s|@HAPROXY_HOP2_DUBBO@|$HAPROXY_HOP2_DUBBO|g" \
    "$1" > "$2"
}
wait_port() { # wait_port PORT NAME PID
  for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    kill -0 "$3" 2>/dev/null || die "$2 exited: $(tail -n 5 "$WORK/$2.log" "$WORK/$2.error.log" 2>/dev/null)"
    sleep 0.05
  done
  die "$2 is not listening on $1 within 10 s"
}

say "starting nginx and haproxy chains"
for hop in hop1 hop2; do
  mkdir -p "$WORK/nginx-$hop-tmp"
  render "$CHAINS/nginx-$hop.conf" "$WORK/nginx-$hop.conf"
  "$NGINX" -p "$WORK" -e "$WORK/nginx-$hop.error.log" -c "$WORK/nginx-$hop.conf" >"$WORK/nginx-$hop.log" 2>&1 &
  PROXY_PIDS+=($!)
  render "$CHAINS/haproxy-$hop.cfg" "$WORK/haproxy-$hop.cfg"
  "$HAPROXY" -db -f "$WORK/haproxy-$hop.cfg" >"$WORK/haproxy-$hop.log" 2>&1 &
  PROXY_PIDS+=($!)
done
NGINX_HOP1=${PROXY_PIDS[0]} HAPROXY_HOP1=${PROXY_PIDS[1]} NGINX_HOP2=${PROXY_PIDS[2]} HAPROXY_HOP2=${PROXY_PIDS[3]}
wait_port $NGINX_HOP1_H2 nginx-hop1 "$NGINX_HOP1"; wait_port $NGINX_HOP1_H1 nginx-hop1 "$NGINX_HOP1"
wait_port $NGINX_HOP2_H2 nginx-hop2 "$NGINX_HOP2"; wait_port $NGINX_HOP2_H1 nginx-hop2 "$NGINX_HOP2"
wait_port $HAPROXY_HOP1_H2 haproxy-hop1 "$HAPROXY_HOP1"; wait_port $HAPROXY_HOP1_H1 haproxy-hop1 "$HAPROXY_HOP1"
wait_port $HAPROXY_HOP2_H2 haproxy-hop2 "$HAPROXY_HOP2"; wait_port $HAPROXY_HOP2_H1 haproxy-hop2 "$HAPROXY_HOP2"
wait_port $HAPROXY_HOP1_DUBBO haproxy-hop1 "$HAPROXY_HOP1"; wait_port $HAPROXY_HOP2_DUBBO haproxy-hop2 "$HAPROXY_HOP2"
# nginx: the master and its one worker, both counted.
with_children() { echo "$1" $(pgrep -P "$1" || true) | tr ' ' ','; }

addrs() { # addrs H2ADDR H1ADDR [DUBBOADDR]: the protocol → address map of one target
  printf '{"grpc-unary":"%s","grpc-bidi":"%s","triple-grpc":"%s","triple-json":"%s","http":"%s"%s}' "$1" "$1" "$1" "$2" "$2" \
    "${3:+,\"dubbo\":\"$3\"}"
}
E=127.0.0.1:17110
cat > "$WORK/targets.json" <<EOF
{"targets":[
 {"name":"direct","addrs":{"grpc-unary":"$GRPC","grpc-bidi":"$GRPC","triple-grpc":"$TRIPLE","triple-json":"$TRIPLE","http":"$HTTP","dubbo":"$DUBBO"},"procs":{}},
 {"name":"strait","addrs":$(addrs $E $E $E),"procs":{"alpha-egress-1":[$(pid_of alpha-egress-1)],"beta-ingress-1":[$(pid_of beta-ingress-1)]},
  "profile":{"strait-egress":"127.0.0.1:17111","strait-ingress":"127.0.0.1:17211"}},
 {"name":"nginx","addrs":$(addrs 127.0.0.1:$NGINX_HOP1_H2 127.0.0.1:$NGINX_HOP1_H1),"procs":{"nginx-hop1":[$(with_children "$NGINX_HOP1")],"nginx-hop2":[$(with_children "$NGINX_HOP2")]}},
 {"name":"haproxy","addrs":$(addrs 127.0.0.1:$HAPROXY_HOP1_H2 127.0.0.1:$HAPROXY_HOP1_H1 127.0.0.1:$HAPROXY_HOP1_DUBBO),"procs":{"haproxy-hop1":[$HAPROXY_HOP1],"haproxy-hop2":[$HAPROXY_HOP2]}}
],
"providers":[$(pid_of beta-samples-1),$DUBBO_PID]}
EOF

say "measuring (nginx $("$NGINX" -v 2>&1 | sed 's|.*/||'), HAProxy $("$HAPROXY" -v | sed -n '1s/HAProxy version \([^ ]*\).*/\1/p'), $(nproc) cores)"
# GOVERN=1: ten non-limiting governance policies on each hop (see above).
# BENCH_ARGS: more flags for loadtest/bench, e.g. "-targets direct,haproxy -only grpc-unary:65536".
# shellcheck disable=SC2086
"$WORK/bench" -config "$WORK/targets.json" -load "$WORK/load" -out "$OUT" \
  ${QUICK:+-quick -profile 4s} ${BENCH_ARGS:-}
"$WORK/plot" -in "$OUT/latest.json" -out "$OUT/latest.svg" \
  -title "Strait vs two chained nginx / HAProxy, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) shared cores${QUICK:+ (QUICK run)}"
echo "wrote $OUT/latest.svg"
