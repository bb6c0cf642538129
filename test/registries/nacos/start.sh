#!/usr/bin/env bash
# start.sh DIR PORT — run a real Nacos 2.x server (standalone, embedded Derby storage, no
# auth) for tests, in the background, with everything it writes under DIR.
#
#   PORT       HTTP API and console (bound to 127.0.0.1), under /nacos
#   PORT+1000  gRPC for SDK clients (nacos-sdk-go v2 connects here)
#   PORT+1001  gRPC between cluster members (unused standalone, but always bound)
#   PORT-1000  JRaft (Nacos 2.x starts it even standalone)
# Nacos 2.3.2 binds its gRPC and JRaft ports on all interfaces; it has no setting for that.
#
# The server is assembled from Maven Central on first use into a persistent cache
# (${STRAIT_NACOS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/strait/nacos}); later starts are
# offline. Alibaba does not publish Nacos' server modules to Maven Central (only the client),
# so the jars come from org.jeecgframework.nacos, JeecgBoot's republication of the upstream
# Nacos server modules unchanged: com.alibaba.nacos.Nacos, `"version":"2.3.2"` at runtime.
#
# `start.sh --assemble` only fills the cache (for `make deps`).
#
# Prints the server's log tail and exits non-zero if it is not ready within
# NACOS_START_TIMEOUT seconds (default 180). If NACOS_PARENT_PID is set, a watchdog stops the
# server when that process is gone, so a killed test run leaves no JVM behind (and, with
# NACOS_PARENT_CLEANUP=1, removes DIR: Nacos' JRaft logs preallocate ~450 MB there).
set -euo pipefail

NACOS_GROUP=${NACOS_GROUP:-org.jeecgframework.nacos}
NACOS_VERSION=${NACOS_VERSION:-2.3.2}
DEP_PLUGIN=org.apache.maven.plugins:maven-dependency-plugin:3.6.1
CACHE=${STRAIT_NACOS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/strait/nacos}
VDIR=$CACHE/$NACOS_GROUP-$NACOS_VERSION
CP=$VDIR/classpath.txt

die() { echo "nacos start: $*" >&2; exit 1; }

# classpath_ok: every jar of the cached classpath is present.
classpath_ok() {
	[[ -s $CP ]] || return 1
	local IFS=:
	for j in $(cat "$CP"); do [[ -f $j ]] || return 1; done
}

assemble() {
	command -v java >/dev/null || die "java not found (apt-get install openjdk-17-jre-headless)"
	command -v mvn >/dev/null || die "mvn not found (apt-get install maven)"
	mkdir -p "$VDIR"
	(
		flock 9
		if classpath_ok; then exit 0; fi
		cat >"$VDIR/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>strait.test</groupId><artifactId>nacos-server-classpath</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>$NACOS_GROUP</groupId><artifactId>nacos-console</artifactId><version>$NACOS_VERSION</version></dependency>
  </dependencies>
</project>
POM
		echo "nacos start: assembling Nacos $NACOS_VERSION ($NACOS_GROUP) from Maven Central into $VDIR" >&2
		# build-classpath keeps Maven's resolution order, which matters: hessian 4.0.63 (Nacos)
		# must come before com.alipay.sofa:hessian 3.3.6 (JRaft), which has the same classes.
		if ! mvn -B -q -f "$VDIR/pom.xml" -Dmaven.repo.local="$VDIR/m2" \
			"$DEP_PLUGIN:build-classpath" -Dmdep.includeScope=runtime -Dmdep.outputFile="$CP.tmp" >"$VDIR/mvn.log" 2>&1; then
			tail -40 "$VDIR/mvn.log" >&2
			die "maven could not resolve $NACOS_GROUP:nacos-console:$NACOS_VERSION"
		fi
		mv "$CP.tmp" "$CP"
		classpath_ok || die "assembled classpath has missing jars"
	) 9>"$CACHE/.lock"
}

if [[ ${1:-} == --assemble ]]; then
	assemble
	echo "nacos start: $NACOS_VERSION ready in $VDIR" >&2
	exit 0
fi

[[ $# -eq 2 ]] || die "usage: start.sh DIR PORT | start.sh --assemble"
DIR=$1
PORT=$2
[[ $PORT =~ ^[0-9]+$ ]] && ((PORT > 1000 && PORT + 1001 < 65536)) || die "bad port $PORT"
GRPC=$((PORT + 1000))
TIMEOUT=${NACOS_START_TIMEOUT:-180}
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)

ready() {
	local body
	body=$(curl -fsS --max-time 2 "http://127.0.0.1:$PORT/nacos/v1/console/health/readiness" 2>/dev/null) || return 1
	[[ $body == OK ]] || return 1
	(exec 3<>"/dev/tcp/127.0.0.1/$GRPC") 2>/dev/null
}

alive() { [[ -f $DIR/pid ]] && kill -0 "$(cat "$DIR/pid")" 2>/dev/null; }

logtail() {
	echo "---- $DIR/nacos.out (tail) ----" >&2
	tail -40 "$DIR/nacos.out" >&2 2>/dev/null || true
	if [[ -f $DIR/logs/nacos.log ]]; then
		echo "---- $DIR/logs/nacos.log (tail) ----" >&2
		tail -20 "$DIR/logs/nacos.log" >&2
	fi
}

if alive; then
	if ready; then
		echo "nacos start: already running (pid $(cat "$DIR/pid")) on 127.0.0.1:$PORT" >&2
		exit 0
	fi
	die "a server (pid $(cat "$DIR/pid")) runs in $DIR but is not ready on port $PORT; stop it first"
fi

command -v curl >/dev/null || die "curl not found"
for p in "$PORT" "$GRPC" $((PORT + 1001)) $((PORT - 1000)); do
	if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
		die "port $p is in use (Nacos needs PORT, PORT+1000, PORT+1001 and PORT-1000)"
	fi
done

assemble

mkdir -p "$DIR/logs" "$DIR/tmp"
start=$(date +%s%N)
cd "$DIR"
# setsid: the server outlives this script and is not in the caller's process group.
setsid java -Xms256m -Xmx512m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
	-Djava.io.tmpdir="$DIR/tmp" -Duser.home="$DIR" \
	-Dnacos.standalone=true -Dnacos.home="$DIR" -Dnacos.logs.path="$DIR/logs" -DJM.LOG_PATH="$DIR/logs" \
	-Dserver.address=127.0.0.1 -Dserver.port="$PORT" -Dnacos.inetutils.ip-address=127.0.0.1 \
	-Dnacos.core.auth.enabled=false -Dserver.tomcat.accesslog.enabled=false \
	-cp "$(cat "$CP")" com.alibaba.nacos.Nacos >"$DIR/nacos.out" 2>&1 </dev/null &
pid=$!
echo "$pid" >"$DIR/pid"

if [[ -n ${NACOS_PARENT_PID:-} ]]; then
	# shellcheck disable=SC2016 # expanded by the watchdog's shell
	setsid bash -c '
		while kill -0 "$1" 2>/dev/null && kill -0 "$2" 2>/dev/null; do sleep 2; done
		kill -0 "$1" 2>/dev/null && exit 0 # the server ended, not the parent
		kill "$2" 2>/dev/null
		while kill -0 "$2" 2>/dev/null; do sleep 0.5; done
		[[ $3 == 1 ]] && rm -rf "$4"' \
		watchdog "$NACOS_PARENT_PID" "$pid" "${NACOS_PARENT_CLEANUP:-0}" "$DIR" >/dev/null 2>&1 </dev/null &
	echo $! >"$DIR/watchdog.pid"
fi

deadline=$((SECONDS + TIMEOUT))
until ready; do
	if ! kill -0 "$pid" 2>/dev/null; then
		logtail
		rm -f "$DIR/pid"
		die "server exited before it was ready"
	fi
	if ((SECONDS >= deadline)); then
		logtail
		kill "$pid" 2>/dev/null || true
		rm -f "$DIR/pid"
		die "server not ready within ${TIMEOUT}s"
	fi
	sleep 0.25
done
ms=$((($(date +%s%N) - start) / 1000000))
echo "nacos start: Nacos $NACOS_VERSION ready on 127.0.0.1:$PORT (gRPC $GRPC) in ${ms} ms, pid $pid" >&2
