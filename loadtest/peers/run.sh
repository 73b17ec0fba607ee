#!/usr/bin/env bash
# Start one broadcast server in the foreground (exec), on 127.0.0.1:PORT.
#
#   loadtest/peers/run.sh NAME PORT [-- EXTRA ARGS...]
#
# NAME: bun | node-ws | go-hub | hubcast. The process that runs the server replaces this
# script, so `run.sh go-hub 9000 & pid=$!` gives the server's own PID.
# EXTRA ARGS go to hubcast (`target/release/hubcast --listen 127.0.0.1:PORT EXTRA...`);
# the peers take none. Peers must be installed first (install.sh); hubcast is built with
# `cargo build --release -p hubcast` if its binary is missing.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"

usage() { echo "usage: $0 bun|node-ws|go-hub|hubcast PORT [-- EXTRA ARGS...]" >&2; exit 2; }
[ $# -ge 2 ] || usage
NAME="$1" PORT="$2"
shift 2
if [ $# -gt 0 ]; then
  [ "$1" = "--" ] || usage
  shift
fi
[[ "$PORT" =~ ^[0-9]+$ ]] || usage

need() { [ -e "$1" ] || { echo "run.sh: $1 missing; run loadtest/peers/install.sh $NAME" >&2; exit 1; }; }
no_extra() { [ $# -eq 0 ] || { echo "run.sh: $NAME takes no extra args" >&2; exit 2; }; }

# Every server gets the same file-descriptor limit: as many as the hard limit allows.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
export PORT

case "$NAME" in
  bun)
    no_extra "$@"
    need "$HERE/.bin/bun"
    exec "$HERE/.bin/bun" "$HERE/bun/server.js"
    ;;
  node-ws)
    no_extra "$@"
    need "$HERE/node_modules/ws/package.json"
    exec node "$HERE/node-ws/server.js"
    ;;
  go-hub)
    no_extra "$@"
    need "$HERE/.bin/go-hub"
    exec "$HERE/.bin/go-hub"
    ;;
  hubcast)
    if [ ! -x "$TARGET_DIR/release/hubcast" ]; then
      echo "run.sh: building hubcast (cargo build --release -p hubcast)" >&2
      (cd "$ROOT" && cargo build --release -p hubcast) >&2
    fi
    exec "$TARGET_DIR/release/hubcast" --listen "127.0.0.1:$PORT" "$@"
    ;;
  *) usage ;;
esac
