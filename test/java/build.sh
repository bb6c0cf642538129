#!/usr/bin/env bash
# build.sh — build the Java Dubbo peers of test/java (test/java/peer: an EchoService provider
# and a consumer that runs checks) into one runnable jar, and print the jar's path.
#
# The jar is kept in a persistent cache keyed by a hash of the peer's sources (pom.xml and
# src/) and of this script:
#   ${STRAIT_JAVA_PEER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/strait/java-peer}/<hash>/java-peer.jar
# so a second run prints the same path at once. Maven's local repository is the cache's m2/,
# shared by every hash: the first build downloads Apache Dubbo and its registry clients from
# Maven Central (the pom pins every version); a build whose pom.xml was resolved before runs
# offline (mvn -o). STRAIT_JAVA_OFFLINE=1 forces offline builds.
#
# Safe to run concurrently (flock) and idempotent. `make deps` runs it once.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SELF=$HERE/$(basename "${BASH_SOURCE[0]}")
SRC=$HERE/peer
CACHE=${STRAIT_JAVA_PEER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/strait/java-peer}
M2=$CACHE/m2

die() { echo "java-peer build: $*" >&2; exit 1; }

command -v java >/dev/null || die "java not found (apt-get install openjdk-17-jdk-headless)"
command -v javac >/dev/null || die "javac not found (apt-get install openjdk-17-jdk-headless)"
command -v mvn >/dev/null || die "mvn not found (apt-get install maven)"
[[ -f $SRC/pom.xml ]] || die "no $SRC/pom.xml"

# hash_files prints one hash of the files' relative paths and contents (sorted: stable).
hash_files() {
	(cd "$SRC" && find pom.xml src -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum; sha256sum <"$SELF") |
		sha256sum | cut -c1-16
}
HASH=$(hash_files)
POMHASH=$(sha256sum <"$SRC/pom.xml" | cut -c1-16)
OUT=$CACHE/$HASH
JAR=$OUT/java-peer.jar

if [[ -s $JAR ]]; then
	echo "$JAR"
	exit 0
fi

mkdir -p "$CACHE"
(
	flock 9
	if [[ -s $JAR ]]; then exit 0; fi # built by another run meanwhile
	mkdir -p "$OUT"
	BUILD=$(mktemp -d "$OUT/build.XXXXXX")
	trap 'rm -rf "$BUILD"' EXIT
	# Build from a copy: the source tree stays free of target/.
	cp -r "$SRC/pom.xml" "$SRC/src" "$BUILD/"
	offline=()
	if [[ -f $M2/.resolved-$POMHASH || ${STRAIT_JAVA_OFFLINE:-} == 1 ]]; then
		offline=(-o)
	fi
	echo "java-peer build: building $HASH${offline:+ (offline)} in $BUILD" >&2
	start=$(date +%s%N)
	if ! mvn -q -B "${offline[@]}" -f "$BUILD/pom.xml" -Dmaven.repo.local="$M2" package >"$BUILD/mvn.log" 2>&1; then
		tail -60 "$BUILD/mvn.log" >&2
		rm -rf "$BUILD"
		rmdir "$OUT" 2>/dev/null || true
		die "mvn package failed (log above)"
	fi
	[[ -s $BUILD/target/java-peer-all.jar ]] || die "mvn package made no target/java-peer-all.jar"
	touch "$M2/.resolved-$POMHASH"
	mv "$BUILD/target/java-peer-all.jar" "$JAR.tmp"
	mv "$JAR.tmp" "$JAR"
	echo "java-peer build: $JAR in $((($(date +%s%N) - start) / 1000000)) ms" >&2
) 9>"$CACHE/.lock"

[[ -s $JAR ]] || die "no jar at $JAR"
echo "$JAR"
