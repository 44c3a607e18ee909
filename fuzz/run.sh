#!/usr/bin/env bash
# Runs every fuzz target for SECONDS seconds (default 600), two at a time.
# Seeds: fuzz/seeds/<target>/ plus, for SIP targets, the RFC 4475/5118
# messages and the SDP bodies from ../shared/conformance.
# usage: fuzz/run.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-600}; shift || true
targets=("$@"); [ ${#targets[@]} -gt 0 ] || targets=(sip_message sip_uri sip_via_contact sdp rtp ng srtp b2bua journal sip_stream g711 codec_decoders transcode_stage media_services wav dns hep tls_stream)
shared=../../shared/conformance
cargo fuzz build -s none -a -O
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    [ -d "seeds/$t" ] && cp -n seeds/"$t"/* "corpus/$t/" 2>/dev/null || true
    if [ -d "$shared" ] && [[ "$t" == sip_* ]]; then
        cp -n "$shared"/rfc4475/*.dat "corpus/$t/" 2>/dev/null || true
        for f in "$shared"/rfc5118/*; do [ "${f##*/}" = manifest.tsv ] || cp -n "$f" "corpus/$t/" 2>/dev/null || true; done
    fi
done
mkdir -p logs
run() { cargo fuzz run -s none -a -O "$1" "corpus/$1" -- -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1 >"logs/$1.log" 2>&1; echo "$1: exit $?"; }
i=0
for t in "${targets[@]}"; do
    run "$t" &
    i=$((i + 1))
    if [ $((i % 2)) -eq 0 ]; then wait; fi
done
wait
grep -H -E "^(stat::number_of_executed_units|stat::peak_rss_mb|Done)|SUMMARY|panicked" logs/*.log || true
