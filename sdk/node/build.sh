#!/usr/bin/env bash
# Builds the `thaw` npm package into OUTDIR: index.js, index.d.ts, package.json, the Node-API addon
# thaw.node (compiled with cc against the pinned `node-api-headers` npm package, which
# scripts/node-deps fetches; nothing comes from nodejs.org) and libthaw.so beside it (the addon
# finds it through its rpath, $ORIGIN). One build serves every Node.js with Node-API 8.
#   sdk/node/build.sh OUTDIR [LIBTHAW_SO]
# LIBTHAW_SO defaults to target/release/libthaw.so (cargo build --release -p thaw), else
# target/debug/libthaw.so. Then: require('OUTDIR') or `npm install OUTDIR`.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${1:?usage: sdk/node/build.sh OUTDIR [LIBTHAW_SO]}
lib=${2:-}
if [ -z "$lib" ]; then
    for l in "$root/target/release/libthaw.so" "$root/target/debug/libthaw.so"; do
        [ -f "$l" ] && { lib=$l; break; }
    done
fi
[ -n "$lib" ] && [ -f "$lib" ] || {
    echo "build.sh: libthaw.so not found: run \`cargo build --release -p thaw\` or pass its path" >&2
    exit 1
}
deps=$("$root/scripts/node-deps")
headers="$deps/node-api-headers/include"

mkdir -p "$out"
tmp=$(mktemp -d "$out/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cp "$lib" "$tmp/libthaw.so"
${CC:-cc} -shared -fPIC -O2 -Wall -Wextra -Werror -std=gnu11 \
    -I "$headers" -I "$root/sdk/include" "$here/thaw_node.c" \
    -L "$tmp" -lthaw -Wl,-rpath,'$ORIGIN' -o "$tmp/thaw.node"
cp "$here/package.json" "$here/index.js" "$here/index.d.ts" "$tmp/"
for f in libthaw.so thaw.node package.json index.js index.d.ts; do
    mv -f "$tmp/$f" "$out/$f"
done
echo "$out"
