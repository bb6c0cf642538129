#!/usr/bin/env bash
# stop.sh DIR — stop the Nacos server that start.sh started in DIR (SIGTERM, then SIGKILL
# after 20 s). Does nothing if none runs there. Leaves DIR's files to the caller.
set -euo pipefail
[[ $# -eq 1 ]] || { echo "usage: stop.sh DIR" >&2; exit 2; }
DIR=$1
if [[ -f $DIR/watchdog.pid ]]; then
	kill "$(cat "$DIR/watchdog.pid")" 2>/dev/null || true
	rm -f "$DIR/watchdog.pid"
fi
[[ -f $DIR/pid ]] || exit 0
pid=$(cat "$DIR/pid")
if kill -0 "$pid" 2>/dev/null; then
	kill "$pid" 2>/dev/null || true
	for _ in $(seq 1 80); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.25
	done
	if kill -0 "$pid" 2>/dev/null; then
		echo "nacos stop: pid $pid ignored SIGTERM for 20 s, killing it" >&2
		kill -9 "$pid" 2>/dev/null || true
	fi
fi
rm -f "$DIR/pid"
