#!/usr/bin/env bash
# TCP stall benchmark: what the clients of a migrated server see on their established connections, against the freeze.
# Three hosts on one switch (client, source, target; scripts/lib/hosts.sh, as the integration tests build them). A
# tcpseq server (native/workload/tcpseq.c) runs on the source as init of its own pid namespace and answers on a
# service address; CLIENTS clients on the third host (phases spread over one interval) each send one 8-byte request
# every INTERVAL_US over ONE connection and time the replies: CLIENT=client waits for each reply, sleeps, sends the
# next; CLIENT=stream sends on its clock whether or not the replies came (requests in flight). The server is moved
# with --tcp-established --move-address, RUNS times for each client-prompt setting (PROMPTS, default "off on": a
# target agent each, started with --prompt-clients off|on, the runs alternating between them so both see the same
# machine), each run with a fresh server and clients. Per migration it prints migrate's own frozen time (freeze to
# resume on the target, --json frozenMs), the longest any client waited (tcpseq's max_stall_us: for client, from a
# request to its reply; for stream, between two replies) and their ratio; then the median and worst per setting.
# A client whose request is dropped during the freeze (CRIU's lock on the source, ours on the target) retransmits
# on a doubling timer (200 ms, 400 ms, 800 ms ...) and may wait out a whole backed-off timeout after the restore.
# A request already in flight when the tree froze was taken by the source's kernel and comes back with the restore
# (its answer follows the resume), and a stream's later segments make the target SACK, so that its client
# retransmits at once: the case this measures is a request sent while the locks are on, which the default (a
# request every 200 ms) hits often; a request every 5 ms mostly does not. Nothing here is a test: it measures.
# RATE=1gbit gives the source's link a real bandwidth (tc tbf; default: the veth's own speed).
# BALLAST_MIB gives the server that much memory of random bytes (tcpseq server's ballast): with MODE=cold it is moved
# while frozen, and the freeze grows past the first few timeouts.
#   RUNS=5 PROMPTS="off on" MODE=precopy|cold CLIENT=client CLIENTS=4 INTERVAL_US=200000 BALLAST_MIB=0 FAMILY=4|6 \
#     scripts/bench/tcp-stall.sh
# PCAP=1 also records what the client host's interface saw during each migration (tcpdump -tt, $B/pcap-RUN-PROMPT.txt).
# The binaries are those of scripts/setup.sh (MIGRATE_INSTALL_DIR as there); MIGRATE_SETUP_DONE=1 skips running it.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
RUNS=${RUNS:-5}
PROMPTS=${PROMPTS:-"off on"}
MODE=${MODE:-precopy}
INTERVAL_US=${INTERVAL_US:-200000}
FAMILY=${FAMILY:-4}
CLIENT=${CLIENT:-client}
CLIENTS=${CLIENTS:-4}
BALLAST_MIB=${BALLAST_MIB:-0}
SW=ts-sw SRC=ts-src TGT=ts-tgt CLI=ts-cli SIF=tss0 TIF=tst0 CIF=tsc0 NET=10.244.0 PORT=7300
B=/tmp/migrate-tcp-stall

case "$FAMILY" in
  4) SERVICE=$NET.100/24 ANY=0.0.0.0 ;;
  6) SERVICE=fd44::100/64 ANY=:: ;;
  *) echo "tcp-stall.sh: FAMILY is 4 or 6, not '$FAMILY'" >&2; exit 2 ;;
esac
case "$CLIENT" in client | stream) ;; *) echo "tcp-stall.sh: CLIENT is client or stream, not '$CLIENT'" >&2; exit 2 ;; esac
case "$RUNS$INTERVAL_US$CLIENTS$BALLAST_MIB" in *[!0-9]*) echo "tcp-stall.sh: RUNS, INTERVAL_US, CLIENTS and BALLAST_MIB are numbers" >&2; exit 2 ;; esac
for p in $PROMPTS; do
  case "$p" in on | off | default) ;; *) echo "tcp-stall.sh: PROMPTS holds on, off or default (no flag), not '$p'" >&2; exit 2 ;; esac
done
ADDR=${SERVICE%/*}

[ -n "${MIGRATE_SETUP_DONE:-}" ] || bash "$REPO/scripts/setup.sh" >/dev/null 2>&1
# shellcheck source=../lib/hosts.sh
. "$REPO/scripts/lib/hosts.sh"
BIN=${MIGRATE_INSTALL_DIR:-/opt/migrate/bin}
MIGRATE=$BIN/migrate.d/migrate AGENTBIN=$BIN/migrate-agent.d/migrate-agent
TCPSEQ=$REPO/native/bin/tcpseq

# Processes this script started, by pid: the agents, the client, the server's launcher and the server (source or
# restored copy, found by its marker path).
AGENTS=() CLIENT_PIDS=() LAUNCHER= DUMP=
MARKER=$B/server
server_pids() { # the server tree's init (source or restored copy): its marker in argv, pid 1 of its own namespace
  pgrep -f "^$MARKER server" | while read -r p; do
    [ "$(readlink /proc/"$p"/ns/pid 2>/dev/null)" != "$(readlink /proc/self/ns/pid)" ] && echo "$p"
  done || true
}
stop_server() {
  local p
  for p in $(server_pids); do kill -KILL "$p" 2>/dev/null || true; done
  [ -n "$LAUNCHER" ] && { kill -KILL "$LAUNCHER" 2>/dev/null || true; wait "$LAUNCHER" 2>/dev/null || true; }
  LAUNCHER=
}
cleanup() {
  set +e
  for c in "${CLIENT_PIDS[@]}"; do kill -KILL "$c" 2>/dev/null; done
  [ -n "$DUMP" ] && kill "$DUMP" 2>/dev/null
  stop_server
  for a in "${AGENTS[@]}"; do kill "$a" 2>/dev/null; done
  wait 2>/dev/null
  del_switched_hosts "$SW" "$SRC" "$TGT" "$CLI"
}
trap cleanup EXIT
del_switched_hosts "$SW" "$SRC" "$TGT" "$CLI"

make_switched_hosts "$SW" "$SRC" "$TGT" "$CLI" "$SIF" "$TIF" "$CIF" "$NET"
# RATE (e.g. 1gbit): the source's link gets that bandwidth (tc tbf), as a real network between hosts would.
[ -n "${RATE:-}" ] && tc -n "$SRC" qdisc replace dev "$SIF" root tbf rate "$RATE" burst 256k latency 50ms
if [ "$FAMILY" = 6 ]; then
  n=1
  for pair in "$SRC:$SIF" "$TGT:$TIF" "$CLI:$CIF"; do
    ip -n "${pair%%:*}" addr add "fd44::$n/64" dev "${pair#*:}" nodad
    n=$((n + 1))
  done
fi

rm -rf "$B"
mkdir -p "$B"
umask 077
cp "$TCPSEQ" "$MARKER"
head -c 32 /dev/urandom | base64 >"$B/token"
declare -A PORT_OF
port=7070
for p in $PROMPTS; do
  flag=()
  [ "$p" != default ] && flag=(--prompt-clients "$p")
  nsenter --net=/run/netns/$TGT "$AGENTBIN" --listen "$NET.2:$port" --page-port $((port + 1)) --token-file "$B/token" \
    --work-dir "$B/agent-$p" --log-dir "$B/logs-$p" --service-interface "$TIF" "${flag[@]}" >"$B/agent-$p.out" 2>&1 &
  AGENTS+=($!)
  for _ in $(seq 150); do grep -q "listening on" "$B/agent-$p.out" && break; sleep 0.1; done
  grep -q "listening on" "$B/agent-$p.out" || { echo "agent ($p) did not start: $(cat "$B/agent-$p.out")" >&2; exit 1; }
  PORT_OF[$p]=$port
  port=$((port + 2))
done

rows=()
for run in $(seq "$RUNS"); do
  for p in $PROMPTS; do
    # The address starts on the source; the client's neighbour cache forgets where it was.
    ip -n "$TGT" addr del "$SERVICE" dev "$TIF" 2>/dev/null || true
    ip -n "$SRC" addr add "$SERVICE" dev "$SIF" $([ "$FAMILY" = 6 ] && echo nodad)
    ip -n "$CLI" neigh flush dev "$CIF"
    nsenter --net=/run/netns/$SRC setsid unshare -pf setsid "$MARKER" server "$ANY" $PORT "$BALLAST_MIB" >"$B/server.out" 2>&1 &
    LAUNCHER=$!
    for _ in $(seq 600); do grep -q LISTENING "$B/server.out" 2>/dev/null && break; sleep 0.05; done
    pid=$(server_pids | head -n1)
    [ -n "$pid" ] || { echo "the server did not start: $(cat "$B/server.out")" >&2; exit 1; }
    # CLIENTS clients, their phases spread over one interval: each connection is its own sample of where its
    # request falls against the freeze and the locks.
    CLIENT_PIDS=()
    for c in $(seq "$CLIENTS"); do
      rm -f "$B/client-$c.status"
      nsenter --net=/run/netns/$CLI "$TCPSEQ" "$CLIENT" "$ADDR" $PORT "$INTERVAL_US" --status "$B/client-$c.status" >"$B/client-$c.out" 2>&1 &
      CLIENT_PIDS+=($!)
      sleep "$(python3 -c "print($INTERVAL_US / 1e6 / $CLIENTS)")"
    done
    requests() { sed -n 's/.*requests=\([0-9]*\).*/\1/p' "$B/client-$1.status" 2>/dev/null || true; }
    least() { local c n m=; for c in $(seq "$CLIENTS"); do n=$(requests "$c"); n=${n:-0}; [ -z "$m" ] || [ "$n" -lt "$m" ] && m=$n; done; echo "$m"; }
    for _ in $(seq 300); do [ "$(least)" -ge 10 ] && break; sleep 0.1; done
    if [ "${PCAP:-0}" = 1 ]; then
      nsenter --net=/run/netns/$CLI tcpdump -i "$CIF" -nn -tt -l "tcp port $PORT or arp or icmp or icmp6" >"$B/pcap-$run-$p.txt" 2>/dev/null &
      DUMP=$!
      sleep 0.5
    fi
    json=$(nsenter --net=/run/netns/$SRC "$MIGRATE" --to "$NET.2:${PORT_OF[$p]}" --token-file "$B/token" --mode "$MODE" --json \
      --tcp-established --move-address "$SERVICE" --work-dir "$B/src" --log-dir "$B/logs-src" "$pid" \
      2>"$B/migrate-$run-$p.err" | tail -n1) || true
    # The stall is over once every client is answered again: wait for 10 more replies each (or 30 s), then stop them.
    after=$(least)
    for _ in $(seq 300); do [ "$(least)" -ge $((after + 10)) ] && break; sleep 0.1; done
    [ -n "$DUMP" ] && { kill "$DUMP" 2>/dev/null || true; wait "$DUMP" 2>/dev/null || true; DUMP=; }
    for c in "${CLIENT_PIDS[@]}"; do kill -TERM "$c" 2>/dev/null || true; wait "$c" 2>/dev/null || true; done
    CLIENT_PIDS=()
    stall= result=OK
    for c in $(seq "$CLIENTS"); do
      line=$(grep -E '^(OK|ERROR) ' "$B/client-$c.out" | tail -n1 || true)
      echo "[run $run, prompt $p] client $c: ${line:-nothing}" >&2
      [[ "$line" == OK* ]] || result=FAIL
      s=$(sed -n 's/.*max_stall_us=\([0-9]*\).*/\1/p' <<<"$line")
      [ -n "$s" ] && { [ -z "$stall" ] || [ "$s" -gt "$stall" ]; } && stall=$s
    done
    frozen=$(python3 -c 'import json,sys
try: print(json.loads(sys.argv[1])["frozenMs"])
except Exception: print("-")' "$json")
    echo "[run $run, prompt $p] migrate: $json" >&2
    rows+=("$run $p ${frozen:--} ${stall:--} $result")
    stop_server
  done
done

echo
echo "TCP stall of a moved server's clients, $MODE, ballast $BALLAST_MIB MiB, IPv$FAMILY, $CLIENTS x tcpseq $CLIENT: a request every $INTERVAL_US us, one connection each"
printf '%-4s %-7s | %10s %10s %7s | %s\n' run prompt "frozen ms" "stall ms" ratio client
for r in "${rows[@]}"; do
  read -r run p frozen stall ok <<<"$r"
  python3 - "$run" "$p" "$frozen" "$stall" "$ok" <<'PY'
import sys
run, p, frozen, stall, ok = sys.argv[1:]
try:
    f, s = float(frozen), int(stall) / 1000
    print(f"{run:<4} {p:<7} | {f:10.0f} {s:10.0f} {s / f:7.2f} | {ok}")
except ValueError:
    print(f"{run:<4} {p:<7} | {frozen:>10} {stall:>10} {'-':>7} | {ok}")
PY
done
printf '%s\n' "${rows[@]}" | python3 -c '
import sys, statistics
by = {}
for line in sys.stdin:
    run, p, frozen, stall, ok = line.split()
    try:
        by.setdefault(p, []).append((float(frozen), int(stall) / 1000))
    except ValueError:
        pass
for p, v in by.items():
    ratios = [s / f for f, s in v]
    extra = [s - f for f, s in v]
    print(f"prompt {p}: {len(v)} runs, stall/frozen median {statistics.median(ratios):.2f} worst {max(ratios):.2f}; "
          f"stall - frozen median {statistics.median(extra):.0f} ms worst {max(extra):.0f} ms")
'
echo "(frozen: migrate's timer from freeze to resume on the target; stall: the longest any client waited, tcpseq's max_stall_us)"
