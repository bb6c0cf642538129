#!/usr/bin/env bash
# stop.sh DIR — stop the etcd that start.sh DIR PORT started, and wait until it is gone.
# Safe to run when it is not running.
set -uo pipefail

if [ $# -ne 1 ]; then
	echo "usage: $0 DIR" >&2
	exit 2
fi
dir=$1
[ -d "$dir" ] || exit 0
dir=$(cd "$dir" && pwd) # as start.sh wrote it into the server's command line

if [ -f "$dir/watchdog.pid" ]; then
	kill "$(cat "$dir/watchdog.pid")" 2>/dev/null
	rm -f "$dir/watchdog.pid"
fi
[ -f "$dir/pid" ] || exit 0
pid=$(cat "$dir/pid")

alive() {
	local state
	state=$(sed -n 's/^State:[[:space:]]*\(.\).*/\1/p' "/proc/$pid/status" 2>/dev/null) || return 1
	[ -n "$state" ] && [ "$state" != Z ]
}
# Only the server this DIR started: a stale pid file may name an unrelated process by now.
if ! tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "--data-dir $dir/data"; then
	rm -f "$dir/pid"
	exit 0
fi
if kill "$pid" 2>/dev/null; then
	for _ in $(seq 1 100); do # up to 10 s, then SIGKILL
		alive || break
		sleep 0.1
	done
	if alive; then
		kill -9 "$pid" 2>/dev/null
		for _ in $(seq 1 50); do
			alive || break
			sleep 0.1
		done
	fi
fi
if alive; then
	echo "stop.sh: etcd (pid $pid) is still running" >&2
	exit 1
fi
rm -f "$dir/pid"
