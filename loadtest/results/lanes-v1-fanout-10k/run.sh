#!/usr/bin/env bash
# f10kv1.sh OUT ROUNDS BIN: fanout-10k scenario, plain vs v1 subscribers, interleaved
out=$1; rounds=$2; bin=$3; mkdir -p $out
port=19500
for r in $(seq 1 $rounds); do for proto in plain v1; do
  port=$((port+1))
  RUST_LOG=warn $bin --listen 127.0.0.1:$port --shards 2 >/dev/null 2>&1 & pid=$!
  for i in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
  extra=""; [ $proto = v1 ] && extra="--protocol v1"
  start=$(date -u +%H:%M:%S)
  timeout 600 /work/main/target/release/hubcast-loadtest --url "ws://127.0.0.1:$port/ws?topic=bench" --server-pid $pid \
    --subs 10000 --pubs 1 --size 64 --ramp 25:2:3200 --duration 5 --slo-ms 250 --keep-going $extra --json -q > $out/$proto-run$r.json 2>$out/$proto-run$r.err
  kill $pid; wait $pid 2>/dev/null; echo "$start $proto run$r" >> $out/log.txt; sleep 3
done; done
