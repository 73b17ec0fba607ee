#!/usr/bin/env bash
# f10k.sh OUT ROUNDS name=bin ... : fanout-10k scenario, servers interleaved
out=$1; rounds=$2; shift 2; mkdir -p $out
port=19400
for r in $(seq 1 $rounds); do for spec in "$@"; do
  name=${spec%%=*}; bin=${spec#*=}; port=$((port+1))
  RUST_LOG=warn $bin --listen 127.0.0.1:$port --shards 2 >/dev/null 2>&1 & pid=$!
  for i in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
  start=$(date -u +%H:%M:%S)
  timeout 600 /work/main/target/release/hubcast-loadtest --url "ws://127.0.0.1:$port/ws?topic=bench" --server-pid $pid \
    --subs 10000 --pubs 1 --size 64 --ramp 25:2:6400 --duration 5 --slo-ms 250 --keep-going --json -q > $out/$name-run$r.json 2>$out/$name-run$r.err
  kill $pid; wait $pid 2>/dev/null; echo "$start $name run$r" >> $out/log.txt; sleep 3
done; done
