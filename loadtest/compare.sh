#!/usr/bin/env bash
# Run one load scenario against several broadcast servers in turn and tabulate the results.
#
#   loadtest/compare.sh [--scenario NAME]... [--servers LIST] [options] [SERVER...] [-- LOADTEST ARGS...]
#
# For each scenario and each server (default: hubcast bun node-ws go-hub): start it with
# peers/run.sh on its own port, wait until it answers, run hubcast-loadtest against it,
# save the JSON to loadtest/results/<scenario>-<server>.json, stop it. Then print one
# markdown table per scenario and write it to loadtest/results/<scenario>.md.
# Logs of each server and of each load run go to loadtest/results/logs/.
#
# Options:
#   --scenario NAME   fanout-1k | fanout-10k | idle-15k | storm-10k | all (repeatable or
#                     comma-separated; default: all)
#   --servers LIST    comma-separated servers (same as naming them as arguments)
#   --port N          first port to try; each server gets the next free one (default 18780)
#   --timeout SECS    bound on one load run (default 900)
#   --cooldown SECS   pause after stopping a server (default 3)
#   --hubcast-args S  extra args for hubcast, word-split (e.g. "--shards 2")
#   --loadtest-args S replace the scenario's loadtest args, word-split (e.g. a shorter ramp)
#   --no-install      do not run peers/install.sh first
#   --dry-run         print what would run, run nothing
#   --list            list scenarios and exit
#   -- ARGS           appended to every hubcast-loadtest command line (flags the scenario
#                     already sets cannot be given twice: use --loadtest-args)
# Only 127.0.0.1 is ever targeted.
set -euo pipefail

# ---------------------------------------------------------------------------------------
# hubcast-loadtest --json report fields (loadtest/src/report.rs). Adjust here only.
# Each J_* is a jq expression on the report giving the table column's value in the
# column's unit; a missing value (null, or no output) prints as "–". J_DEFS is prepended.
# shellcheck disable=SC2016 # jq variables, not shell ones
J_DEFS='def div($d): if . == null then null else . / $d end;
  def best: .summary.highest_sustained_rate as $r
    | first(.steps[]? | select(.pass and .target_rate == $r));'
J_MSGS='.summary.highest_sustained_rate'                   # highest passing step, msgs/s
J_DELIVERIES='.summary.deliveries_per_sec_at_highest'      # deliveries/s at that step
J_CPU_NS='best | .server.cpu_ns_per_delivery'              # server CPU ns/delivery there
J_P99_MS='best | .latency.p99_us | div(1000)'              # send→receive p99 there, ms
J_RSS_CONN_KIB='(.idle.server_rss_per_conn_bytes // .server.rss_per_conn_bytes) | div(1024)' # KiB
J_CONNECT_S='.connect.seconds'                             # time to connect all subscribers, s
J_CONNECT_P99_MS='.connect.handshake.p99_us | div(1000)'   # one connect + handshake p99, ms
J_CONNECT_FAILED='.connect.failed'                         # subscriber connects that failed
J_CLIENT_SATURATED='.client.saturated_any_step'            # load generator was the bottleneck?
# ---------------------------------------------------------------------------------------

# Scenarios: loadtest args (the --url, --server-pid and --json are added per run).
SCENARIOS=(fanout-1k fanout-10k idle-15k storm-10k)
declare -A SCENARIO_ARGS=(
  [fanout-1k]="--subs 1000 --pubs 1 --size 64 --ramp 100:1.5:200000 --duration 5 --slo-ms 50"
  [fanout-10k]="--subs 10000 --pubs 1 --size 64 --ramp 5:1.5:20000 --duration 5 --slo-ms 50"
  [idle-15k]="--subs 15000 --connect-rate 2000 --idle 20"
  [storm-10k]="--subs 10000 --connect-rate 0 --connect-concurrency 0 --idle 5"
)
declare -A SCENARIO_DOC=(
  [fanout-1k]="1,000 subscribers on one topic, 64 B messages from 1 WebSocket publisher, rate ×1.5 each 5 s step from 100 msgs/s until a step fails (p99 > 50 ms, loss, or the publisher falls behind)"
  [fanout-10k]="10,000 subscribers on one topic, 64 B messages from 1 WebSocket publisher, rate ×1.5 each 5 s step from 5 msgs/s until a step fails (p99 > 50 ms, loss, or the publisher falls behind)"
  [idle-15k]="15,000 idle connections (2,000 connects/s), held 20 s: server memory per connection"
  [storm-10k]="connect storm: 10,000 connections at once (no connect-rate or concurrency limit), held 5 s"
)
DEFAULT_SERVERS=(hubcast bun node-ws go-hub)

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
PEERS="$HERE/peers"
RESULTS="$HERE/results"
LOGS="$RESULTS/logs"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
LOADTEST="$TARGET_DIR/release/hubcast-loadtest"
STARTUP_TIMEOUT="${STARTUP_TIMEOUT:-30}"

log() { printf '[compare %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit "${1:-2}"; }

# --- arguments --------------------------------------------------------------------------
scenarios=() servers=() extra=()
base_port=18780 run_timeout=900 cooldown=3 hubcast_args="" loadtest_args="" install=1 dry_run=0
while [ $# -gt 0 ]; do
  case "$1" in
    --scenario) [ $# -ge 2 ] || usage; IFS=, read -r -a s <<<"$2"; scenarios+=("${s[@]}"); shift 2 ;;
    --servers) [ $# -ge 2 ] || usage; IFS=, read -r -a s <<<"$2"; servers+=("${s[@]}"); shift 2 ;;
    --port) base_port="${2:?}"; shift 2 ;;
    --timeout) run_timeout="${2:?}"; shift 2 ;;
    --cooldown) cooldown="${2:?}"; shift 2 ;;
    --hubcast-args) hubcast_args="${2?}"; shift 2 ;;
    --loadtest-args) loadtest_args="${2?}"; shift 2 ;;
    --no-install) install=0; shift ;;
    --dry-run) dry_run=1; shift ;;
    --list)
      for s in "${SCENARIOS[@]}"; do printf '%-11s %s\n%-11s   %s\n' "$s" "${SCENARIO_DOC[$s]}" "" "${SCENARIO_ARGS[$s]}"; done
      exit 0 ;;
    -h|--help) usage 0 ;;
    --) shift; extra=("$@"); break ;;
    -*) log "unknown option $1"; usage ;;
    *) servers+=("$1"); shift ;;
  esac
done
[ ${#scenarios[@]} -gt 0 ] || scenarios=(all)
if [[ " ${scenarios[*]} " == *" all "* ]]; then scenarios=("${SCENARIOS[@]}"); fi
[ ${#servers[@]} -gt 0 ] || servers=("${DEFAULT_SERVERS[@]}")
for s in "${scenarios[@]}"; do [ -n "${SCENARIO_ARGS[$s]+x}" ] || die "unknown scenario '$s' (see --list)"; done
for s in "${servers[@]}"; do
  case "$s" in hubcast|bun|node-ws|go-hub) ;; *) die "unknown server '$s' (hubcast | bun | node-ws | go-hub)" ;; esac
done
for n in "$base_port" "$run_timeout" "$cooldown"; do [[ "$n" =~ ^[0-9]+$ ]] || die "not a number: $n"; done

# --- server lifecycle -------------------------------------------------------------------
SERVER_PID="" LOADTEST_PID=""

stop_server() {
  [ -n "$SERVER_PID" ] || return 0
  local pid="$SERVER_PID" i
  SERVER_PID=""
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      log "server $pid ignored SIGTERM for 10 s; killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$LOADTEST_PID" ]; then
    kill -TERM "$LOADTEST_PID" 2>/dev/null || true # timeout passes it on to the load run
    wait "$LOADTEST_PID" 2>/dev/null || true
  fi
  stop_server
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_answers() { curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$1/"; }
port_busy() { [ -n "$(ss -ltnH "sport = :$1" 2>/dev/null)" ] || port_answers "$1"; }

# free_port N: the first port from N on that nothing listens on.
free_port() {
  local p="$1"
  while port_busy "$p"; do p=$((p + 1)); done
  echo "$p"
}

# wait_ready PORT: until the server answers HTTP on PORT; fails if it exits or times out.
wait_ready() {
  local port="$1" deadline=$((SECONDS + STARTUP_TIMEOUT))
  until port_answers "$port"; do
    kill -0 "$SERVER_PID" 2>/dev/null || return 1
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.1
  done
}

# --- preparation ------------------------------------------------------------------------
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true # the load generator holds one fd per client
command -v jq >/dev/null || { [ "$dry_run" = 1 ] || "$PEERS/install.sh" hubcast; }
command -v jq >/dev/null || [ "$dry_run" = 1 ] || die "jq is required"
if [ "$dry_run" = 0 ]; then
  if [ ! -x "$LOADTEST" ]; then
    log "building hubcast-loadtest"
    (cd "$ROOT" && cargo build --release -p hubcast-loadtest) >&2
  fi
  if [[ " ${servers[*]} " == *" hubcast "* ]] && [ ! -x "$TARGET_DIR/release/hubcast" ]; then
    log "building hubcast"
    (cd "$ROOT" && cargo build --release -p hubcast) >&2
  fi
  peers=()
  for s in "${servers[@]}"; do [ "$s" = hubcast ] || peers+=("$s"); done
  if [ "$install" = 1 ] && [ ${#peers[@]} -gt 0 ]; then "$PEERS/install.sh" "${peers[@]}"; fi
  mkdir -p "$RESULTS" "$LOGS"
fi

versions() {
  local v=()
  for s in "${servers[@]}"; do
    case "$s" in
      hubcast) v+=("hubcast $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo '(no commit)')") ;;
      bun) v+=("bun $("$PEERS/.bin/bun" --version 2>/dev/null || echo '?')") ;;
      node-ws) v+=("node $(node --version 2>/dev/null || echo '?') + ws $(node -p "require('$PEERS/node_modules/ws/package.json').version" 2>/dev/null || echo '?')") ;;
      go-hub) v+=("go-hub: $(go version -m "$PEERS/.bin/go-hub" 2>/dev/null | awk 'NR==1{g=$2} $1=="dep"&&$2~/gorilla/{w=$3} END{print g " + gorilla/websocket " w}')") ;;
    esac
  done
  local IFS=';' joined
  joined="${v[*]}"
  echo "${joined//;/; }"
}

# fmt VALUE PRINTF-FORMAT: the value formatted, or "–" if missing.
fmt() {
  # shellcheck disable=SC2059 # the format is the caller's
  if [ -z "$1" ] || [ "$1" = null ]; then printf '–'; else printf "$2" "$1"; fi
}

# row SERVER JSON-FILE: one markdown table row from a load run's report.
row() {
  local server="$1" file="$2" vals msgs dpl cpu p99 rss cs cp99 cfail connect
  vals="$(jq -r "$J_DEFS [([$J_MSGS][0]), ([$J_DELIVERIES][0]), ([$J_CPU_NS][0]), ([$J_P99_MS][0]),
                  ([$J_RSS_CONN_KIB][0]), ([$J_CONNECT_S][0]), ([$J_CONNECT_P99_MS][0]), ([$J_CONNECT_FAILED][0])]
                 | map(if . == null then \"null\" else tostring end) | join(\" \")" "$file")" || vals=""
  read -r msgs dpl cpu p99 rss cs cp99 cfail <<<"$vals"
  connect="$(fmt "${cs:-}" '%.2f s')"
  [ -z "${cp99:-}" ] || [ "$cp99" = null ] || connect+=" (p99 $(fmt "$cp99" '%.1f') ms)"
  [ -z "${cfail:-}" ] || [ "$cfail" = null ] || [ "$cfail" = 0 ] || connect+=", $cfail failed"
  printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$server" \
    "$(fmt "${msgs:-}" '%.0f')" "$(fmt "${dpl:-}" '%.0f')" "$(fmt "${cpu:-}" '%.0f')" \
    "$(fmt "${p99:-}" '%.2f')" "$(fmt "${rss:-}" '%.1f KiB')" "$connect"
}

# --- runs -------------------------------------------------------------------------------
failures=0
for scenario in "${scenarios[@]}"; do
  read -r -a sargs <<<"${loadtest_args:-${SCENARIO_ARGS[$scenario]}}"
  declare -A status=() note=()
  port=$((base_port - 1))
  for server in "${servers[@]}"; do
    port=$((port + 1))
    [ "$dry_run" = 1 ] || port="$(free_port "$port")"
    out="$RESULTS/$scenario-$server.json"
    slog="$LOGS/$scenario-$server.server.log"
    llog="$LOGS/$scenario-$server.loadtest.log"
    run_args=()
    if [ "$server" = hubcast ] && [ -n "$hubcast_args" ]; then read -r -a h <<<"$hubcast_args"; run_args=(-- "${h[@]}"); fi
    lt=("$LOADTEST" --url "ws://127.0.0.1:$port/ws?topic=bench" --server-pid PID --json "${sargs[@]}" ${extra[@]+"${extra[@]}"})
    if [ "$dry_run" = 1 ]; then
      echo "$PEERS/run.sh $server $port ${run_args[*]:-}"
      echo "  ${lt[*]} > $out"
      continue
    fi

    log "$scenario/$server: starting on 127.0.0.1:$port"
    "$PEERS/run.sh" "$server" "$port" ${run_args[@]+"${run_args[@]}"} >"$slog" 2>&1 &
    SERVER_PID=$!
    if ! wait_ready "$port"; then
      log "$scenario/$server: did not come up within ${STARTUP_TIMEOUT}s; see $slog"
      tail -n 5 "$slog" >&2 || true
      stop_server
      status[$server]="did not start"; failures=$((failures + 1)); continue
    fi

    lt[4]="$SERVER_PID" # --server-pid
    log "$scenario/$server: ${lt[*]}"
    # In the background so that a signal to this script is handled at once (bash defers
    # traps while a foreground command runs); cleanup() stops it.
    timeout --kill-after=10 "$run_timeout" "${lt[@]}" >"$out.tmp" 2>"$llog" &
    LOADTEST_PID=$!
    rc=0
    wait "$LOADTEST_PID" || rc=$?
    LOADTEST_PID=""
    alive=1 died=""
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      alive=0 src=0
      wait "$SERVER_PID" 2>/dev/null || src=$?
      if [ "$src" -gt 128 ]; then died="server died (signal $((src - 128)))"; else died="server died (exit $src)"; fi
    fi
    stop_server

    # hubcast-loadtest exits 0 when a step met the SLO (idle: every connection held),
    # 1 when none did (a result too), 2 on error.
    if { [ "$rc" = 0 ] || [ "$rc" = 1 ]; } && jq -e 'type == "object"' "$out.tmp" >/dev/null 2>&1; then
      mv "$out.tmp" "$out"
      status[$server]=ok
      [ "$rc" = 0 ] || note[$server]="loadtest exit 1: no step met the SLO (idle or storm: a connection failed or was lost)"
      [ "$alive" = 1 ] || note[$server]+="${note[$server]:+; }$died during the run"
      if [ "$(jq -r "$J_DEFS [$J_CLIENT_SATURATED][0]" "$out" 2>/dev/null)" = true ]; then
        note[$server]+="${note[$server]:+; }the load generator was saturated in some step (the server may be faster than shown)"
      fi
      log "$scenario/$server: saved $out"
    else
      reason="loadtest exit $rc"
      [ "$rc" != 124 ] && [ "$rc" != 137 ] || reason="timed out after ${run_timeout}s"
      [ "$rc" != 0 ] && [ "$rc" != 1 ] || reason="report is not JSON"
      [ "$alive" = 1 ] || reason+=", $died"
      log "$scenario/$server: FAILED ($reason); see $llog and $slog"
      tail -n 5 "$llog" >&2 || true
      if [ -s "$out.tmp" ]; then mv "$out.tmp" "$out.failed"; else rm -f "$out.tmp"; fi
      rm -f "$out"
      status[$server]="$reason"; failures=$((failures + 1))
    fi
    sleep "$cooldown"
  done
  [ "$dry_run" = 0 ] || continue

  md="$RESULTS/$scenario.md"
  {
    echo "## $scenario"
    echo
    if [ -n "$loadtest_args" ]; then echo "Scenario args replaced with --loadtest-args."; else echo "${SCENARIO_DOC[$scenario]}."; fi
    echo
    echo "- load: \`hubcast-loadtest ${sargs[*]}${extra[*]:+ ${extra[*]}}\`${hubcast_args:+; hubcast args: \`$hubcast_args\`}"
    echo "- servers: $(versions)"
    echo "- machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr); load generator on the same machine; $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "| server | highest sustained msgs/s | deliveries/s | server CPU ns/delivery | p99 ms | RSS per idle conn | connect time |"
    echo "|---|---:|---:|---:|---:|---:|---|"
    for server in "${servers[@]}"; do
      if [ "${status[$server]}" = ok ]; then
        row "$server" "$RESULTS/$scenario-$server.json"
      else
        echo "| $server | failed: ${status[$server]} | – | – | – | – | – |"
      fi
    done
    for server in "${servers[@]}"; do
      [ -z "${note[$server]:-}" ] || printf '\nNote: %s: %s.\n' "$server" "${note[$server]}"
    done
  } >"$md"
  echo
  cat "$md"
  unset status note
done

[ "$failures" = 0 ] || { log "$failures run(s) failed"; exit 1; }
