#!/bin/sh
# Builds a browser bundle of JsSIP (from npm: the package ships CommonJS
# only) into $1/jssip.js, with esbuild from npm. Versions are pinned; the
# npm cache makes a second run quick.
set -eu
out="$1"
mkdir -p "$out"
[ -s "$out/jssip.js" ] && exit 0
work="$out/npm"
mkdir -p "$work"
cd "$work"
[ -f package.json ] || echo '{"private":true}' > package.json
npm install --no-audit --no-fund --silent jssip@3.13.8 esbuild@0.24.2 >/dev/null
./node_modules/.bin/esbuild --bundle --format=iife --global-name=JsSIP --minify \
    node_modules/jssip/lib/JsSIP.js --outfile="$out/jssip.js.tmp" --log-level=warning
mv "$out/jssip.js.tmp" "$out/jssip.js"
