#!/usr/bin/env bash
# Fault matrix: every fault in every phase of a live migration, injected through the real mechanism, and what became
# of the workload. Prints one row per cell:
#   phase | fault | migrate's exit and outcome | where the workload runs afterwards (running / stopped copies per
#   host) | its memory (memwork's own check of its pattern and file) | what was left behind | verdict
# Expected in every cell: exactly one running copy, memory intact, a message that says what happened, and nothing
# left once the dust settles (no migration directory on the agent, no CRIU lock table, no criu process).
#
# Phases (the moment comes from migrate's own progress lines on stderr):
#   preflight   "[preflight] checking"            precopy   first "[precopy] iteration"
#   dump        "[dump] freezing"                 final     100 ms after "[dump] freezing" (approximate)
#   transfer    "[transfer] dumped"               restore   "[restore] restoring on target"
#   commit      "[commit] source stopped"         lazyfill  right after migrate exited 0 (the target fills on)
# Faults:
#   link-down    the target's link down for 15 s        link-flap   down/up every 0.5 s, 6 times
#   agent-kill   SIGKILL of the target agent (it is restarted 5 s later, as a supervisor would)
#   migrate-kill SIGKILL of migrate                      disk-full   the agent's work directory (a tmpfs) filled
#   criu-fail    CRIU fails on the target: the restore (agent fault point "restore"), or in the lazy fill SIGKILL
#                of criu lazy-pages; elsewhere CRIU does not run on the target: n/a
#   agent-stop   SIGSTOP of the target agent (a stalled peer), SIGCONT after migrate ended or 150 s
#
# Usage: scripts/faults.sh                       the whole matrix (8 x 7 cells, about 40 minutes)
#        CELLS="precopy:agent-kill lazyfill:agent-kill" scripts/faults.sh     chosen cells
#        MIB=N (workload size, default 256)  WRITE_RATE=N (% of pages rewritten per second, default 5)
# Exit status: 0 when every cell met the expectation, 1 otherwise. Run as root.
set -uo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MIB=${MIB:-256}
WRITE_RATE=${WRITE_RATE:-5}
PHASES=(preflight precopy dump final transfer restore commit lazyfill)
FAULTS=(link-down link-flap agent-kill migrate-kill disk-full criu-fail agent-stop)
ROOT=/tmp/migrate-faults
[ "$(id -u)" -eq 0 ] || { echo "run as root" >&2; exit 2; }

bash "$REPO/scripts/setup.sh" >/dev/null || exit 2
BIN=${MIGRATE_INSTALL_DIR:-/opt/migrate/bin}
MIGRATE=$BIN/migrate.d/migrate AGENT=$BIN/migrate-agent.d/migrate-agent MEMWORK=$BIN/memwork
# shellcheck source=lib/hosts.sh
. "$REPO/scripts/lib/hosts.sh"

SRC=flt-src TGT=flt-tgt SIF=fltsrc0 TIF=flttgt0 NET=10.241.0 PORT=7070 WPORT=9000

query() { # query NETNS COMMAND: one line to the workload's control port
  timeout 20 nsenter --net="/run/netns/$1" bash -c "exec 3<>/dev/tcp/127.0.0.1/$WPORT && echo $2 >&3 && cat <&3" 2>/dev/null
}
copies() { # pids of the live (non-zombie) memwork copies of this cell
  pgrep -f "memwork --mib $MIB --port $WPORT --file $CELL/data" | while read -r p; do
    s=$(ps -o stat= -p "$p" 2>/dev/null | cut -c1)
    [ -n "$s" ] && [ "$s" != Z ] && [ "$(readlink /proc/"$p"/ns/pid)" != "$(readlink /proc/self/ns/pid)" ] && echo "$p"
  done
}
start_agent() {
  nsenter --net="/run/netns/$TGT" "$AGENT" --listen "$NET.2:$PORT" --token-file "$CELL/token" --work-dir "$CELL/agent" \
    --log-dir "$CELL/logs" --reserve-mib 16 "$@" >>"$CELL/agent.out" 2>&1 &
  AGENT_PID=$!
  for _ in $(seq 100); do grep -q "listening on" "$CELL/agent.out" && return 0; sleep 0.1; done
  return 1
}
cleanup_cell() {
  [ -n "${FLAP_PID:-}" ] && kill "$FLAP_PID" 2>/dev/null
  [ -n "${AGENT_PID:-}" ] && { kill -CONT "$AGENT_PID" 2>/dev/null; kill -KILL "$AGENT_PID" 2>/dev/null; }
  [ -n "${MIGRATE_PID:-}" ] && kill -KILL "$MIGRATE_PID" 2>/dev/null
  for p in $(copies); do kill -KILL "$p" 2>/dev/null; done
  pkill -KILL -f "migrate-agent.*$CELL/agent" 2>/dev/null
  pkill -KILL -f "criu.*$CELL" 2>/dev/null
  wait 2>/dev/null
  del_hosts "$SRC" "$TGT"
  mountpoint -q "$CELL/agent" && umount -l "$CELL/agent"
  FLAP_PID='' AGENT_PID='' MIGRATE_PID=''
}
trap 'cleanup_cell; rm -rf "$ROOT"' EXIT

wait_line() { # wait_line PATTERN SECONDS: until migrate printed it (0), or it ended / time ran out (1)
  local deadline=$((SECONDS + $2))
  while [ $SECONDS -lt $deadline ]; do
    grep -q -- "$1" "$CELL/migrate.err" 2>/dev/null && return 0
    kill -0 "$MIGRATE_PID" 2>/dev/null || { grep -q -- "$1" "$CELL/migrate.err" && return 0; return 1; }
    sleep 0.005
  done
  return 1
}

inject() { # inject FAULT: the fault, now
  case $1 in
    link-down) ip -n "$TGT" link set "$TIF" down; (sleep 15; ip -n "$TGT" link set "$TIF" up 2>/dev/null) & ;;
    link-flap) (for _ in 1 2 3 4 5 6; do ip -n "$TGT" link set "$TIF" down; sleep 0.5; ip -n "$TGT" link set "$TIF" up; sleep 0.5; done) &
      FLAP_PID=$! ;;
    agent-kill) kill -KILL "$AGENT_PID"; (sleep 5; start_agent) & ;;
    migrate-kill) kill -KILL "$MIGRATE_PID" ;;
    disk-full) fallocate -l "$(($(stat -f -c '%a*%S' "$CELL/agent")))" "$CELL/agent/filler" 2>/dev/null ||
      dd if=/dev/zero of="$CELL/agent/filler" bs=1M 2>/dev/null ;;
    criu-fail) pkill -KILL -f "criu.*lazy-pages" ;;
    agent-stop) kill -STOP "$AGENT_PID" ;;
  esac
}

run_cell() { # run_cell PHASE FAULT -> prints a table row; returns 0 if the cell met the expectation
  local phase=$1 fault=$2 agent_args=()
  CELL="$ROOT/$phase-$fault"
  rm -rf "$CELL"
  mkdir -p "$CELL/agent" "$CELL/logs"
  umask 077
  head -c 32 /dev/urandom | base64 >"$CELL/token"
  make_hosts "$SRC" "$TGT" "$SIF" "$TIF" "$NET"
  SRC_ID=$(nsenter --net="/run/netns/$SRC" readlink /proc/self/ns/net)
  mount -t tmpfs -o size=$((MIB * 3))m tmpfs "$CELL/agent"
  if [ "$fault" = criu-fail ]; then
    case $phase in
      restore) agent_args=(--inject-fault restore) ;;
      lazyfill) ;;
      *) cleanup_cell; printf '%-9s | %-12s | %s\n' "$phase" "$fault" "n/a: CRIU does not run on the target in this phase"; return 0 ;;
    esac
  fi
  start_agent "${agent_args[@]}" || { cleanup_cell; printf '%-9s | %-12s | %s\n' "$phase" "$fault" "SETUP FAILED: agent"; return 1; }
  nsenter --net="/run/netns/$SRC" setsid unshare -pf setsid "$MEMWORK" --mib "$MIB" --port $WPORT --file "$CELL/data" --mix \
    --write-rate "$WRITE_RATE" --stdio-null &
  for _ in $(seq 300); do query "$SRC" PING >/dev/null && break; sleep 0.1; done
  local pid
  pid=$(copies | head -n1)
  nsenter --net="/run/netns/$SRC" "$MIGRATE" --to "$NET.2:$PORT" --token-file "$CELL/token" --work-dir "$CELL/src-work" \
    --log-dir "$CELL/logs" --json "$pid" >"$CELL/migrate.out" 2>"$CELL/migrate.err" &
  MIGRATE_PID=$!

  local hit=yes rc=""
  case $phase in
    preflight) wait_line "^\[preflight\] checking" 60 || hit=no ;;
    precopy) wait_line "^\[precopy\] iteration" 60 || hit=no ;;
    dump) wait_line "^\[dump\] freezing" 120 || hit=no ;;
    final) if wait_line "^\[dump\] freezing" 120; then sleep 0.1; else hit=no; fi ;;
    transfer) wait_line "^\[transfer\]" 120 || hit=no ;;
    restore) wait_line "^\[restore\]" 120 || hit=no ;;
    commit) wait_line "^\[commit\]" 120 || hit=no ;;
    lazyfill) wait "$MIGRATE_PID"; rc=$?; [ "$rc" -eq 0 ] || hit=no ;;
  esac
  [ "$hit" = yes ] && inject "$fault"
  # migrate's end (bounded), then the dust settles: a stalled agent resumes, a killed one is back.
  local deadline=$((SECONDS + 150))
  if [ -z "$rc" ]; then
    while kill -0 "$MIGRATE_PID" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
    if kill -0 "$MIGRATE_PID" 2>/dev/null; then rc="hung(killed)"; kill -KILL "$MIGRATE_PID"; fi
    wait "$MIGRATE_PID" 2>/dev/null
    rc=${rc:-$?}
  fi
  [ "$fault" = migrate-kill ] && [ "$hit" = yes ] && rc=killed
  [ "$fault" = agent-stop ] && kill -CONT "$AGENT_PID" 2>/dev/null
  if [ "$fault" = agent-kill ] && [ "$hit" = yes ]; then sleep 6; fi # the supervisor's restart
  [ -n "${FLAP_PID:-}" ] && wait "$FLAP_PID" 2>/dev/null
  ip -n "$TGT" link set "$TIF" up 2>/dev/null
  rm -f "$CELL/agent/filler"
  sleep 8

  # Where the workload is, and whether it is intact.
  local where="" mem="" running=0 p ns st status
  for p in $(copies); do
    ns=$([ "$(readlink /proc/"$p"/ns/net)" = "$SRC_ID" ] && echo source || echo target)
    st=$(ps -o stat= -p "$p" | cut -c1)
    if [ "$st" = T ]; then where+="$ns:stopped "; else where+="$ns:running "; running=$((running + 1)); fi
    if [ "$st" != T ]; then
      status=$(query "flt-$([ "$ns" = source ] && echo src || echo tgt)" STATUS)
      case "$status" in *verify=ok*file=ok*) mem+="ok " ;; "") mem+="no-answer " ;; *) mem+="BAD($(grep -o 'verify=[^ ]*' <<<"$status")) " ;; esac
    fi
  done
  [ -z "$where" ] && where="NONE"
  # What was left: migration directories on the agent, CRIU lock tables, criu processes.
  local left=""
  # (a migration directory keeps CRIU's logs; its images and pages must be gone)
  [ -n "$(find "$CELL/agent" -mindepth 2 -maxdepth 2 -type d \( -name images -o -name parent-images -o -name pages \) 2>/dev/null)" ] && left+="agent-data "
  for n in "$SRC" "$TGT"; do ip netns exec "$n" nft list tables 2>/dev/null | grep -q CRIU- && left+="nft($n) "; done
  pgrep -f "criu.*($CELL|lazy-pages)" >/dev/null && left+="criu-procs "
  [ -z "$left" ] && left=none
  local outcome msg
  outcome=$(tail -n1 "$CELL/migrate.out" 2>/dev/null | sed -n 's/.*"workload":"\([^"]*\)".*/\1/p')
  [ -z "$outcome" ] && outcome=$(tail -n1 "$CELL/migrate.out" 2>/dev/null | sed -n 's/.*"status":"\([^"]*\)".*/\1/p')
  msg=$(tail -n1 "$CELL/migrate.out" 2>/dev/null | sed -n 's/.*"error":"\([^"]*\)".*/\1/p' | cut -c1-90)
  local verdict=PASS
  [ "$running" -eq 1 ] && [ "$(wc -w <<<"$where")" -eq 1 ] || verdict=FAIL
  case "$mem" in "ok ") ;; *) verdict=FAIL ;; esac
  [ "$left" = none ] || verdict=FAIL
  [ "$hit" = yes ] || verdict="MISSED(phase not reached)"
  printf '%-9s | %-12s | %-14s | %-18s | %-16s | %-10s | %-15s | %s\n' "$phase" "$fault" "exit $rc ${outcome:-?}" "$where" \
    "${mem:-none}" "$left" "$verdict" "$msg"
  cp "$CELL/migrate.err" "$ROOT/../migrate-faults-$phase-$fault.err" 2>/dev/null
  cleanup_cell
  [ "$verdict" = PASS ]
}

if [ -n "${CELLS:-}" ]; then read -r -a cells <<<"$CELLS"; else
  cells=()
  for ph in "${PHASES[@]}"; do for f in "${FAULTS[@]}"; do cells+=("$ph:$f"); done; done
fi
mkdir -p "$ROOT"
echo "Fault matrix: memwork $MIB MiB writing $WRITE_RATE%/s, live migration with the defaults; each cell on fresh hosts"
printf '%-9s | %-12s | %-14s | %-18s | %-16s | %-10s | %-15s | %s\n' phase fault "migrate" "workload runs" memory "left" verdict "message"
failed=0
for c in "${cells[@]}"; do
  run_cell "${c%%:*}" "${c#*:}" || failed=$((failed + 1))
done
echo "$failed of ${#cells[@]} cells missed the expectation (migrate's stderr of each: /tmp/migrate-faults-PHASE-FAULT.err)"
[ "$failed" -eq 0 ]
