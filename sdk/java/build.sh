#!/bin/sh
# Builds thaw's Java library into OUTDIR: thaw.jar, libthaw_jni.so and, next to them, the
# libthaw.so it links to (found through rpath $ORIGIN, so the three move together).
#   sdk/java/build.sh OUTDIR
# Environment: JAVA_HOME (default: Debian's OpenJDK 17), THAW_LIB (a built libthaw.so; default:
# `cargo build --release -p thaw` and target/release/libthaw.so), CC (default: cc).
set -eu
if [ $# -ne 1 ]; then
    echo "usage: $0 OUTDIR" >&2
    exit 64
fi
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=$1
JAVA_HOME=${JAVA_HOME:-/usr/lib/jvm/java-17-openjdk-amd64}
CC=${CC:-cc}
for tool in javac jar; do
    if [ ! -x "$JAVA_HOME/bin/$tool" ]; then
        echo "$JAVA_HOME/bin/$tool is missing: install openjdk-17-jdk-headless or set JAVA_HOME" >&2
        exit 69
    fi
done
if [ -z "${THAW_LIB:-}" ]; then
    (cd "$root" && cargo build --release -q -p thaw)
    THAW_LIB=$root/target/release/libthaw.so
fi
mkdir -p "$out"
tmp=$(mktemp -d "$out/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/classes"
# shellcheck disable=SC2046
"$JAVA_HOME/bin/javac" -Xlint:all -Werror --release 17 -d "$tmp/classes" $(find "$here/src" -name '*.java' | sort)
"$JAVA_HOME/bin/jar" --create --file "$tmp/thaw.jar" -C "$tmp/classes" .
# Copies, not links: a restored process maps the very files the first life mapped.
cp "$THAW_LIB" "$tmp/libthaw.so"
"$CC" -shared -fPIC -O2 -Wall -Wextra -Werror \
    -I "$JAVA_HOME/include" -I "$JAVA_HOME/include/linux" -I "$root/sdk/include" \
    "$here/jni/thaw_jni.c" -L "$tmp" -lthaw -Wl,-rpath,'$ORIGIN' -o "$tmp/libthaw_jni.so"
for f in thaw.jar libthaw.so libthaw_jni.so; do
    mv -f "$tmp/$f" "$out/$f"
done
