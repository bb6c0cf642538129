#!/usr/bin/env bash
# start.sh DIR PORT — run a throwaway standalone ZooKeeper (Debian's package, 3.8) for tests.
#
# Installs the `zookeeper` package when it is missing, writes DIR/zoo.cfg (data in DIR/data,
# client port PORT on 127.0.0.1 only, no admin server, four-letter words ruok and srvr),
# starts the server in the background (log: DIR/zookeeper.log, PID: DIR/pid) and waits up
# to 60 s for it to answer `ruok` with `imok` and `srvr` with its mode (it serves sessions).
# On failure it prints the log's tail, stops what it started and exits non-zero. Stop it
# with stop.sh DIR.
#
# The tick is 500 ms, so sessions may be as short as 1 s (minSessionTimeout) and an expired
# session's ephemeral nodes go within about a tick of the timeout: tests stay fast.
#
# If WATCH_PID is set, a watchdog stops the server once that process is gone, so a test
# binary killed by a timeout does not leave a ZooKeeper behind.
set -euo pipefail

if [ $# -ne 2 ]; then
	echo "usage: $0 DIR PORT" >&2
	exit 2
fi
dir=$1
port=$2
jar=/usr/share/java/zookeeper.jar
slf4j=/usr/share/java/slf4j-simple.jar

if [ ! -d /usr/share/zookeeper ] || [ ! -f "$jar" ]; then
	echo "start.sh: installing Debian's zookeeper package" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq zookeeper >/dev/null
fi
for f in "$jar" "$slf4j"; do
	if [ ! -f "$f" ]; then
		echo "start.sh: $f is missing after installing zookeeper" >&2
		exit 1
	fi
done

mkdir -p "$dir/data"
dir=$(cd "$dir" && pwd)
if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
	echo "start.sh: a ZooKeeper already runs from $dir (pid $(cat "$dir/pid"))" >&2
	exit 1
fi

cat >"$dir/zoo.cfg" <<CFG
tickTime=500
initLimit=10
syncLimit=5
dataDir=$dir/data
clientPort=$port
clientPortAddress=127.0.0.1
minSessionTimeout=1000
maxSessionTimeout=60000
maxClientCnxns=0
admin.enableServer=false
4lw.commands.whitelist=ruok,srvr
forceSync=no
autopurge.purgeInterval=0
CFG

# The Debian jar's manifest names its dependencies; slf4j-simple sends the server's log to
# stderr, which goes to DIR/zookeeper.log.
nohup java -Xms32m -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
	-Djava.net.preferIPv4Stack=true \
	-Dzookeeper.log.dir="$dir" -Dzookeeper.jmx.log4j.disable=true \
	-Dorg.slf4j.simpleLogger.defaultLogLevel=info \
	-Dorg.slf4j.simpleLogger.showDateTime=true \
	-cp "$jar:$slf4j:/etc/zookeeper/conf" \
	org.apache.zookeeper.server.quorum.QuorumPeerMain "$dir/zoo.cfg" \
	>"$dir/zookeeper.log" 2>&1 </dev/null &
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

fourlw() {
	# Send a four-letter word; the server answers and closes the connection.
	timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" && printf "$2" >&3 && head -c 4096 <&3' _ "$port" "$1" 2>/dev/null
}

serving() {
	# "imok" only says the process is up; srvr reports a mode once it serves sessions
	# (before that: "This ZooKeeper instance is not currently serving requests").
	local srvr
	[ "$(fourlw ruok)" = imok ] || return 1
	srvr=$(fourlw srvr) || return 1
	[[ $srvr == *"Mode: "* ]] && kill -0 "$pid" 2>/dev/null
}

fail() {
	echo "start.sh: $1; last lines of $dir/zookeeper.log:" >&2
	tail -n 40 "$dir/zookeeper.log" >&2 || true
	"$(dirname "$0")/stop.sh" "$dir" >/dev/null 2>&1 || true
	exit 1
}

for _ in $(seq 1 300); do # 300 × 0.2 s = 60 s
	if ! kill -0 "$pid" 2>/dev/null; then
		fail "ZooKeeper (pid $pid) exited"
	fi
	if serving; then
		exit 0
	fi
	sleep 0.2
done
fail "ZooKeeper did not serve on 127.0.0.1:$port within 60 s"
