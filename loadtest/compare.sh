#!/usr/bin/env bash
# Run one load scenario against several broadcast servers in turn and tabulate the results.
#
#   loadtest/compare.sh [--scenario NAME]... [--servers LIST] [options] [SERVER...] [-- LOADTEST ARGS...]
#
# For each scenario and each server (default: hubcast bun node-ws go-hub): start it with
# peers/run.sh on its own port, wait until it answers, run hubcast-loadtest against it,
# save the JSON to loadtest/results/<scenario>-<server>.json, stop it. Then print one
# markdown table per scenario and write it to loadtest/results/<scenario>.md; for the
# scenarios with rate steps (fanout) a second table puts the servers side by side at each
# target rate (deliveries/s · lost · p99 ms · server CPU ns/delivery). The same markdown
# replaces what is between <!-- compare:SCENARIO --> and <!-- /compare:SCENARIO --> in
# docs/benchmarks.md (a section with those markers is appended if they are missing).
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
#   --tables-only     run nothing: rebuild the tables (and the docs sections) from the JSON
#                     reports saved in the results directory; the header lines and the
#                     "server died" notes of the old <scenario>.md are kept (they are not
#                     in the JSON). With --dry-run: print the markdown, write nothing
#   --results DIR     reports, tables and logs go here (default loadtest/results)
#   --docs FILE       markdown file whose per-scenario sections are rewritten
#                     (default docs/benchmarks.md; created with a title if missing)
#   --no-docs         do not touch the docs file
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
J_EXIT_CODE='.summary.exit_code'                           # 0: a step met the SLO, 1: none did
# One array per rate step, for the side-by-side table: target msgs/s, passed?, deliveries/s,
# lost, send→receive p99 in ms (none without samples), server CPU ns/delivery.
J_STEP='.steps[]? | [.target_rate, .pass, .deliveries_per_sec, .lost,
  (if .latency.count == 0 then null else .latency.p99_us | div(1000) end),
  .server.cpu_ns_per_delivery]'
# ---------------------------------------------------------------------------------------

# Scenarios: loadtest args (the --url, --server-pid and --json are added per run).
SCENARIOS=(fanout-1k fanout-10k idle-15k storm-10k)
declare -A SCENARIO_ARGS=(
  [fanout-1k]="--subs 1000 --pubs 1 --size 64 --ramp 100:2:102400 --duration 5 --slo-ms 50"
  [fanout-10k]="--subs 10000 --pubs 1 --size 64 --ramp 25:2:6400 --duration 5 --slo-ms 250 --keep-going"
  [idle-15k]="--subs 15000 --connect-rate 2000 --idle 20"
  [storm-10k]="--subs 10000 --connect-rate 0 --connect-concurrency 0 --idle 5"
)
declare -A SCENARIO_DOC=(
  [fanout-1k]="1,000 subscribers on one topic, 64 B messages from 1 WebSocket publisher, rate ×2 each 5 s step from 100 msgs/s until a step fails (p99 > 50 ms, loss, or the publisher falls behind)"
  [fanout-10k]="10,000 subscribers on one topic, 64 B messages from 1 WebSocket publisher, rate ×2 each 5 s step from 25 to 6,400 msgs/s, every step run (p99 ≤ 250 ms: on 2 shared cores one message to 10,000 sockets alone takes tens of ms)"
  [idle-15k]="15,000 idle connections (2,000 connects/s), held 20 s: server memory per connection"
  [storm-10k]="connect storm: 10,000 connections at once (no connect-rate or concurrency limit), held 5 s"
)
DEFAULT_SERVERS=(hubcast bun node-ws go-hub)

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
PEERS="$HERE/peers"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
LOADTEST="$TARGET_DIR/release/hubcast-loadtest"
STARTUP_TIMEOUT="${STARTUP_TIMEOUT:-30}"

log() { printf '[compare %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit "${1:-2}"; }

# --- arguments --------------------------------------------------------------------------
scenarios=() servers=() extra=()
base_port=18780 run_timeout=900 cooldown=3 hubcast_args="" loadtest_args="" install=1 dry_run=0
tables_only=0 docs=1 RESULTS="$HERE/results" DOCS="$ROOT/docs/benchmarks.md"
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
    --tables-only) tables_only=1; shift ;;
    --results) RESULTS="${2:?}"; shift 2 ;;
    --docs) DOCS="${2:?}"; shift 2 ;;
    --no-docs) docs=0; shift ;;
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
RESULTS="${RESULTS%/}"
LOGS="$RESULTS/logs"
[ "$tables_only" = 0 ] || [ -d "$RESULTS" ] || die "no results directory $RESULTS"

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
command -v jq >/dev/null || { [ "$dry_run" = 1 ] || [ "$tables_only" = 1 ] || "$PEERS/install.sh" hubcast; }
command -v jq >/dev/null || { [ "$dry_run" = 1 ] && [ "$tables_only" = 0 ]; } || die "jq is required"
if [ "$dry_run" = 0 ] && [ "$tables_only" = 0 ]; then
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

NOTE_EXIT1="loadtest exit 1: no step met the SLO (idle or storm: a connection failed or was lost)"
NOTE_SATURATED="the load generator was saturated in some step (the server may be faster than shown)"

# side_by_side SCENARIO: the "same rate, side by side" table: one row per target rate that
# any server ran, one column per server (– where it ran no step at that rate). Prints
# nothing when no report has rate steps (idle, storm).
side_by_side() {
  local scenario="$1" server out steps=""
  for server in "${servers[@]}"; do
    [ "${status[$server]}" = ok ] || continue
    out="$(jq -r --arg s "$server" "$J_DEFS $J_STEP | [\$s] + . | map(if . == null then \"null\" else tostring end) | join(\" \")" \
      "$RESULTS/$scenario-$server.json")" || { log "$scenario/$server: cannot read the steps"; out=""; }
    [ -z "$out" ] || steps+="$out"$'\n'
  done
  [ -n "$steps" ] || return 0
  printf '%s' "$steps" | awk -v order="${servers[*]}" '
    function human(n) {
      if (n >= 1e9) return sprintf("%.2fG", n / 1e9)
      if (n >= 1e6) return sprintf("%.2fM", n / 1e6)
      if (n >= 1e4) return sprintf("%.1fk", n / 1e3)
      return sprintf("%.0f", n)
    }
    function ms(x) {
      if (x >= 100) return sprintf("%.0f", x)
      if (x >= 1) return sprintf("%.1f", x)
      return sprintf("%.2f", x)
    }
    function missing(x) { return x == "" || x == "null" }
    NF >= 7 {
      r = $2 + 0
      if (!(r in seen)) { seen[r] = 1; rates[++nr] = r }
      cell[r, $1] = (missing($4) ? "–" : human($4)) " · " (missing($5) ? "–" : human($5)) " · " \
        (missing($6) ? "–" : ms($6)) " · " (missing($7) || $7 + 0 == 0 || $4 + 0 == 0 ? "–" : sprintf("%.0f", $7)) \
        ($3 == "false" ? " ✗" : "")
    }
    END {
      if (nr == 0) exit
      for (i = 2; i <= nr; i++) {
        v = rates[i]
        for (j = i - 1; j >= 1 && rates[j] > v; j--) rates[j + 1] = rates[j]
        rates[j + 1] = v
      }
      ns = split(order, sv, " ")
      print "**Same rate, side by side.** Each cell: deliveries/s · lost · p99 ms · server CPU ns/delivery" \
        " of the step at that target rate; ✗: the step failed (p99 over the SLO, loss, disconnects or the" \
        " publisher behind); –: no such step (CPU: no deliveries)."
      print ""
      head = "| msgs/s |"; rule = "|---:|"
      for (k = 1; k <= ns; k++) { head = head " " sv[k] " |"; rule = rule "---:|" }
      print head; print rule
      for (i = 1; i <= nr; i++) {
        line = "| " rates[i] " |"
        for (k = 1; k <= ns; k++) line = line " " (((rates[i], sv[k]) in cell) ? cell[rates[i], sv[k]] : "–") " |"
        print line
      }
    }'
}

# render_md SCENARIO [PREAMBLE]: the scenario's markdown (summary table, side-by-side
# table, notes) from status[], note[] and the saved reports. PREAMBLE replaces the
# generated title and header lines (it must end with a blank line).
render_md() {
  local scenario="$1" preamble="${2:-}" server sbs
  if [ -n "$preamble" ]; then
    printf '%s' "$preamble"
  else
    echo "## $scenario"
    echo
    if [ -n "$loadtest_args" ]; then echo "Scenario args replaced with --loadtest-args."; else echo "${SCENARIO_DOC[$scenario]}."; fi
    echo
    echo "- load: \`hubcast-loadtest ${sargs[*]}${extra[*]:+ ${extra[*]}}\`${hubcast_args:+; hubcast args: \`$hubcast_args\`}"
    if [ "$tables_only" = 1 ]; then
      echo "- tables rebuilt from the saved reports on $(date -u '+%Y-%m-%d %H:%M UTC') (server versions and machine not recorded)"
    else
      echo "- servers: $(versions)"
      echo "- machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr); load generator on the same machine; $(date -u '+%Y-%m-%d %H:%M UTC')"
    fi
    echo
  fi
  echo "| server | highest sustained msgs/s | deliveries/s | server CPU ns/delivery | p99 ms | RSS per idle conn | connect time |"
  echo "|---|---:|---:|---:|---:|---:|---|"
  for server in "${servers[@]}"; do
    if [ "${status[$server]}" = ok ]; then
      row "$server" "$RESULTS/$scenario-$server.json"
    else
      echo "| $server | failed: ${status[$server]} | – | – | – | – | – |"
    fi
  done
  sbs="$(side_by_side "$scenario")"
  [ -z "$sbs" ] || printf '\n%s\n' "$sbs"
  for server in "${servers[@]}"; do
    [ -z "${note[$server]:-}" ] || printf '\nNote: %s: %s.\n' "$server" "${note[$server]}"
  done
}

# from_saved SCENARIO OLD-MD: for --tables-only, status[] and note[] of each server from its
# saved report; the reason a run failed and "server died" notes, which the report does not
# hold, come from the scenario's previous markdown OLD-MD.
from_saved() {
  local scenario="$1" old="$2" server file reason died
  for server in "${servers[@]}"; do
    file="$RESULTS/$scenario-$server.json"
    if [ -f "$file" ] && jq -e 'type == "object"' "$file" >/dev/null 2>&1; then
      status[$server]=ok
      [ "$(jq -r "$J_DEFS [$J_EXIT_CODE][0]" "$file" 2>/dev/null)" != 1 ] || note[$server]="$NOTE_EXIT1"
      died="$(awk -v p="Note: $server: " 'index($0, p) == 1 {
          t = substr($0, length(p) + 1); sub(/\.$/, "", t)
          n = split(t, a, "; "); for (i = 1; i <= n; i++) if (a[i] ~ /^server died/) print a[i]
        }' <<<"$old" | head -n 1)"
      [ -z "$died" ] || note[$server]+="${note[$server]:+; }$died"
      if [ "$(jq -r "$J_DEFS [$J_CLIENT_SATURATED][0]" "$file" 2>/dev/null)" = true ]; then
        note[$server]+="${note[$server]:+; }$NOTE_SATURATED"
      fi
    else
      reason="$(awk -v p="| $server | failed: " 'index($0, p) == 1 {
          t = substr($0, length(p) + 1); sub(/ \|.*/, "", t); print t; exit
        }' <<<"$old")"
      status[$server]="${reason:-no saved report}"
    fi
  done
}

# update_docs SCENARIO MD-FILE: replace what is between the scenario's markers in $DOCS
# with MD-FILE (append a section with the markers if there are none; create $DOCS with a
# title if it does not exist). Everything outside the markers is kept byte for byte.
update_docs() {
  local scenario="$1" body="$2" tmp rc=0
  [ -s "$body" ] || { log "warning: $body is empty; $DOCS left unchanged"; return 1; }
  if [ ! -e "$DOCS" ]; then
    mkdir -p "$(dirname "$DOCS")"
    printf '# Benchmarks\n' >"$DOCS"
  fi
  tmp="$(mktemp "$DOCS.XXXXXX")"
  COMPARE_BODY="$body" awk -v begin="<!-- compare:$scenario -->" -v end="<!-- /compare:$scenario -->" '
    function trim(s) { gsub(/^[ \t\r]+|[ \t\r]+$/, "", s); return s }
    BEGIN { f = ENVIRON["COMPARE_BODY"]; while ((getline l < f) > 0) body = body l "\n"; close(f) }
    { last = $0; t = trim($0) }
    inside && t == end { printf "%s", body; print; inside = 0; next }
    inside && t ~ /^<!-- \/?compare:/ { bad = 1; exit }  # another marker first: unbalanced
    inside { next }
    t == begin { print; inside = 1; found = 1; next }
    { print }
    END {
      if (bad || inside) exit 3
      if (!found) {
        if (NR > 0 && trim(last) != "") print ""
        print begin; printf "%s", body; print end
      }
    }' "$DOCS" >"$tmp" || rc=$?
  if [ "$rc" = 0 ]; then
    cat "$tmp" >"$DOCS" # in place: keeps the file's mode and links
    rm -f "$tmp"
    log "$scenario: updated its section of $DOCS"
  else
    rm -f "$tmp"
    log "warning: $DOCS: \"<!-- compare:$scenario -->\" is not closed by \"<!-- /compare:$scenario -->\"; left unchanged"
    return 1
  fi
}

# --- runs -------------------------------------------------------------------------------
failures=0 docs_errors=0
run_servers=()
[ "$tables_only" = 1 ] || run_servers=("${servers[@]}")
for scenario in "${scenarios[@]}"; do
  read -r -a sargs <<<"${loadtest_args:-${SCENARIO_ARGS[$scenario]}}"
  declare -A status=() note=()
  port=$((base_port - 1))
  for server in ${run_servers[@]+"${run_servers[@]}"}; do
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
  md="$RESULTS/$scenario.md"
  if [ "$dry_run" = 1 ] && [ "$tables_only" = 0 ]; then
    echo "  tables to $md$([ "$docs" = 0 ] || echo " and to its section of $DOCS")"
    continue
  fi

  preamble=""
  if [ "$tables_only" = 1 ]; then
    old=""
    [ ! -f "$md" ] || old="$(cat "$md")"
    from_saved "$scenario" "$old"
    if grep -q '^| server |' <<<"$old"; then
      preamble="$(awk '/^\| server \|/ {exit} {print}' <<<"$old")"$'\n\n'
    fi
    if [ "$dry_run" = 1 ]; then
      echo
      render_md "$scenario" "$preamble"
      unset status note
      continue
    fi
  fi
  render_md "$scenario" "$preamble" >"$md"
  echo
  cat "$md"
  if [ "$docs" = 1 ]; then update_docs "$scenario" "$md" || docs_errors=$((docs_errors + 1)); fi
  unset status note
done

[ "$docs_errors" = 0 ] || { log "$docs_errors docs section(s) not updated"; [ "$failures" != 0 ] || exit 1; }
[ "$failures" = 0 ] || { log "$failures run(s) failed"; exit 1; }
