#!/usr/bin/env bash
out=$1; rounds=$2; mkdir -p $out; port=19900
for r in $(seq 1 $rounds); do for rate in 400 800; do for hc in lanes lanes256; do
  port=$((port+1))
  RUST_LOG=warn taskset -c 0 /work/hubcast-$hc --listen 127.0.0.1:$port --shards 1 >/dev/null 2>&1 & pid=$!
  for i in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
  timeout 200 taskset -c 1 /work/hubcast-loadtest-cur --url "ws://127.0.0.1:$port/ws?topic=bench" --server-pid $pid --subs 10000 --pubs 1 --size 64 \
     --rate $rate --duration 6 --slo-ms 250 --keep-going --json -q > $out/$hc.plain-$rate-run$r.json 2>/dev/null
  kill $pid; wait $pid 2>/dev/null; sleep 2
  echo "$(date -u +%T) $hc $rate run$r" >> $out/log.txt
done; done; done
