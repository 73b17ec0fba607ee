#!/usr/bin/env bash
# srvlat.sh OUT: pinned plain vs v1 at 400 and 800 msgs/s; server-side publish_to_socket histogram
out=$1; mkdir -p $out; port=19600
for r in 1 2; do for proto in plain v1; do for rate in 400 800; do
  port=$((port+1))
  RUST_LOG=warn taskset -c 0 /work/hubcast-final8 --listen 127.0.0.1:$port --shards 1 >/dev/null 2>&1 & pid=$!
  for i in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
  extra=""; [ $proto = v1 ] && extra="--protocol v1"
  timeout 200 taskset -c 1 /work/main/target/release/hubcast-loadtest --url "ws://127.0.0.1:$port/ws?topic=bench" --server-pid $pid --subs 10000 --pubs 1 --size 64 \
     --rate $rate --duration 6 --slo-ms 250 --keep-going $extra --json -q > $out/$proto-$rate-run$r.json 2>/dev/null
  curl -s 127.0.0.1:$port/metrics | grep 'publish_to_socket_seconds' > $out/$proto-$rate-run$r.metrics
  kill $pid; wait $pid 2>/dev/null; sleep 2
done; done; done
