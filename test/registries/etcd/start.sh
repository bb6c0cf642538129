#!/usr/bin/env bash
# start.sh DIR PORT — run a throwaway single-member etcd server (Debian's etcd-server
# package, 3.4) for tests: clients on 127.0.0.1:PORT, peers on 127.0.0.1:PORT+1, data in
# DIR/data, log in DIR/etcd.log, PID in DIR/pid. Installs the package when it is missing,
# waits up to 30 s for /health to say true. On failure it prints the log's tail, stops what
# it started and exits non-zero. Stop it with stop.sh DIR.
#
# If WATCH_PID is set, a watchdog stops the server once that process is gone.
set -euo pipefail

if [ $# -ne 2 ]; then
	echo "usage: $0 DIR PORT" >&2
	exit 2
fi
dir=$1
port=$2
peer=$((port + 1))

if ! command -v etcd >/dev/null 2>&1; then
	echo "start.sh: installing Debian's etcd-server package" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq etcd-server >/dev/null
fi

mkdir -p "$dir/data"
dir=$(cd "$dir" && pwd)
if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
	echo "start.sh: an etcd already runs from $dir (pid $(cat "$dir/pid"))" >&2
	exit 1
fi

name=strait-test-$port
nohup etcd --name "$name" --data-dir "$dir/data" \
	--listen-client-urls "http://127.0.0.1:$port" --advertise-client-urls "http://127.0.0.1:$port" \
	--listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
	--initial-cluster "$name=http://127.0.0.1:$peer" --initial-cluster-state new \
	--unsafe-no-fsync --log-level warn \
	>"$dir/etcd.log" 2>&1 </dev/null &
pid=$!
echo "$pid" >"$dir/pid"

if [ -n "${WATCH_PID:-}" ]; then
	(
		while kill -0 "$WATCH_PID" 2>/dev/null && kill -0 "$pid" 2>/dev/null; do
			sleep 1
		done
		kill "$pid" 2>/dev/null || true
	) >/dev/null 2>&1 </dev/null &
	echo $! >"$dir/watchdog.pid"
fi

fail() {
	echo "start.sh: $1; last lines of $dir/etcd.log:" >&2
	tail -n 40 "$dir/etcd.log" >&2 || true
	"$(dirname "$0")/stop.sh" "$dir" >/dev/null 2>&1 || true
	exit 1
}

for _ in $(seq 1 150); do # 150 × 0.2 s = 30 s
	if ! kill -0 "$pid" 2>/dev/null; then
		fail "etcd (pid $pid) exited"
	fi
	if curl -sf -m 1 "http://127.0.0.1:$port/health" 2>/dev/null | grep -q '"health":"true"'; then
		exit 0
	fi
	sleep 0.2
done
fail "etcd did not serve on 127.0.0.1:$port within 30 s"
