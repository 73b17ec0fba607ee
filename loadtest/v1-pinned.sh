#!/usr/bin/env bash
# Plain vs protocol v1 subscribers at 10,000, server pinned to CPU 0, load generator to
# CPU 1 (so that the v1 client's extra decoding cannot take the server's core).
# Usage: loadtest/v1-pinned.sh OUTDIR ROUNDS HUBCAST LOADTEST (release binaries)
set -uo pipefail
out=$1; rounds=$2; HC=$3; LT=$4
mkdir -p "$out"
port=19300
for r in $(seq 1 "$rounds"); do
  for proto in plain v1; do
    port=$((port+1))
    RUST_LOG=warn taskset -c 0 "$HC" --listen 127.0.0.1:$port --shards 1 >/dev/null 2>&1 &
    pid=$!
    for i in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
    extra=""; [ "$proto" = v1 ] && extra="--protocol v1"
    start=$(date -u +%H:%M:%S)
    timeout 400 taskset -c 1 "$LT" --url "ws://127.0.0.1:$port/ws?topic=bench" --server-pid $pid --subs 10000 --pubs 1 --size 64 \
      --rate 25,50,100,200,400,800 --duration 4 --slo-ms 250 --keep-going $extra --json -q > "$out/$proto-run$r.json" 2>"$out/$proto-run$r.err"
    kill $pid; wait $pid 2>/dev/null
    echo "$start $proto run$r done" >> "$out/log.txt"
    sleep 3
  done
done
