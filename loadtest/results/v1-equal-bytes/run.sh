#!/usr/bin/env bash
# bytes.sh OUT ROUNDS: pinned plain-64, plain-103 (frame as long as a v1 push), v1-64 at 400 and 800 msgs/s
out=$1; rounds=$2; mkdir -p $out; port=19700
for r in $(seq 1 $rounds); do for rate in 400 800; do for variant in plain64 plain103 v164; do
  port=$((port+1))
  RUST_LOG=warn taskset -c 0 ${HC:-/work/hubcast-finebuckets} --listen 127.0.0.1:$port --shards 1 >/dev/null 2>&1 & pid=$!
  for i in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
  case $variant in plain64) extra="--size 64";; plain103) extra="--size 103";; v164) extra="--size 64 --protocol v1";; esac
  timeout 200 taskset -c 1 /work/hubcast-loadtest-cur --url "ws://127.0.0.1:$port/ws?topic=bench" --server-pid $pid --subs 10000 --pubs 1 $extra \
     --rate $rate --duration 6 --slo-ms 250 --keep-going --json -q > $out/$variant-$rate-run$r.json 2>/dev/null
  curl -s 127.0.0.1:$port/metrics | grep 'publish_to_socket_seconds' > $out/$variant-$rate-run$r.metrics
  kill $pid; wait $pid 2>/dev/null; sleep 2
  echo "$(date -u +%T) $variant $rate run$r" >> $out/log.txt
done; done; done
