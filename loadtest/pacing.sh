#!/usr/bin/env bash
# Side-by-side: Bun vs hubcast builds/settings at 1,000 subscribers, 64 B, 1 publisher,
# fixed rates (100 and 1,000 msgs/s, 10 s each), servers interleaved, ROUNDS rounds.
# Usage: loadtest/pacing.sh OUTDIR ROUNDS "name=command with PORT" ...
#   e.g. loadtest/pacing.sh /tmp/p 3 "bun=loadtest/peers/run.sh bun PORT" \
#        "hubcast=target/release/hubcast --listen 127.0.0.1:PORT --shards 2"
# LT= the load generator (default target/release/hubcast-loadtest). JSON per run in OUTDIR.
set -uo pipefail
out=$1; rounds=$2; shift 2
mkdir -p "$out"
LT=${LT:-target/release/hubcast-loadtest}
port=19100
for r in $(seq 1 "$rounds"); do
  for spec in "$@"; do
    name=${spec%%=*}; cmd=${spec#*=}
    port=$((port+1))
    cmd=${cmd//PORT/$port}
    bash -c "exec $cmd" >/dev/null 2>&1 &
    pid=$!
    for i in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
    start=$(date -u +%H:%M:%S)
    timeout 300 $LT --url "ws://127.0.0.1:$port/ws?topic=bench" --server-pid $pid --subs 1000 --pubs 1 --size 64 \
      --rate 100,1000 --duration 10 --slo-ms 1000 --keep-going --json -q > "$out/$name-run$r.json" 2>"$out/$name-run$r.err"
    kill $pid; wait $pid 2>/dev/null
    echo "$start $name run$r done" >> "$out/log.txt"
    sleep 2
  done
done
