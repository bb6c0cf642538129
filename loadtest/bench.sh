#!/usr/bin/env bash
# make bench [QUICK=1]: gRPC unary with 1 KiB each way, open loop at 1,000 calls/s and
# closed-loop maximum, against
#   direct: consumer → provider
#   strait: consumer → egress → mTLS tunnel → ingress → provider (deploy/local/up.sh,
#           each gateway GOMAXPROCS=1)
# Prints a table and writes loadtest/results/latest.json. nginx and HAProxy chains are not
# measured yet (see the open issue).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
WORK=$(mktemp -d)
export STRAIT_STATE="$WORK/state" STRAIT_GATEWAY_GOMAXPROCS=1
OUT="$ROOT/loadtest/results"
mkdir -p "$OUT"
if [ -n "${QUICK:-}" ]; then DUR=5s; MAXDUR=3s; else DUR=20s; MAXDUR=10s; fi

deploy/local/up.sh > "$WORK/ready.json"
trap 'deploy/local/down.sh >/dev/null 2>&1; rm -rf "$WORK"' EXIT
go build -o "$WORK/load" ./loadtest/load

DIRECT=$(sed -n 's/.*"grpc":"\([^"]*\)".*/\1/p' "$STRAIT_STATE/beta-samples-1.out")
EGRESS=127.0.0.1:17110
GATEWAYS=$(awk '$1 ~ /-(egress|ingress)-/ {print $2}' "$STRAIT_STATE/pids")
TCK=$(getconf CLK_TCK)

cpu() { # total CPU seconds of the gateway processes
  local t=0
  for p in $GATEWAYS; do
    read -r -a f < "/proc/$p/stat"
    t=$((t + f[13] + f[14]))
  done
  echo "scale=2; $t / $TCK" | bc
}

: > "$WORK/results.jsonl"
for spec in "direct $DIRECT" "strait $EGRESS"; do
  read -r name addr <<< "$spec"
  for mode in open max; do
    before=$(cpu)
    line=$("$WORK/load" -name "$name" -target "$addr" -protocol grpc-unary -payload 1024 -mode "$mode" -rate 1000 \
      -duration "$([ "$mode" = open ] && echo "$DUR" || echo "$MAXDUR")" -concurrency 80)
    after=$(cpu)
    if [ "$name" = strait ]; then c=$(echo "$after - $before" | bc); else c=0; fi
    echo "${line%\}},\"cpu_seconds\":{\"gateways\":$c}}" >> "$WORK/results.jsonl"
  done
done

{ echo "["; paste -sd, "$WORK/results.jsonl"; echo "]"; } > "$OUT/latest.json"
printf '%-8s %-5s %10s %10s %8s %8s %8s %8s %7s %8s\n' target mode offered achieved p50_ms p90_ms p99_ms p999_ms errors cpu_s
sed -e 's/[{}"]//g' "$WORK/results.jsonl" | tr ',' '\n' | awk -F: '
  /^target/ {t=$2} /^mode/ {m=$2} /^offered_rps/ {o=$2} /^achieved_rps/ {a=$2} /^p50_ms/ {p50=$2}
  /^p90_ms/ {p90=$2} /^p99_ms/ {p99=$2} /^p999_ms/ {p999=$2} /^errors/ {e=$2}
  /^cpu_seconds/ {c=$3; printf "%-8s %-5s %10.0f %10.0f %8.3f %8.3f %8.3f %8.3f %7d %8s\n", t, m, o, a, p50, p90, p99, p999, e, c}'
echo "wrote $OUT/latest.json"
