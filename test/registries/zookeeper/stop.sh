#!/usr/bin/env bash
# stop.sh DIR — stop the ZooKeeper that start.sh DIR PORT started, and wait until it is gone.
# Safe to run when it is not running.
set -uo pipefail

if [ $# -ne 1 ]; then
	echo "usage: $0 DIR" >&2
	exit 2
fi
dir=$1

if [ -f "$dir/watchdog.pid" ]; then
	kill "$(cat "$dir/watchdog.pid")" 2>/dev/null
	rm -f "$dir/watchdog.pid"
fi
[ -f "$dir/pid" ] || exit 0
pid=$(cat "$dir/pid")
if kill "$pid" 2>/dev/null; then
	for _ in $(seq 1 100); do # up to 10 s, then SIGKILL
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		kill -9 "$pid" 2>/dev/null
		for _ in $(seq 1 50); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
	fi
fi
if kill -0 "$pid" 2>/dev/null; then
	echo "stop.sh: ZooKeeper (pid $pid) is still running" >&2
	exit 1
fi
rm -f "$dir/pid"
