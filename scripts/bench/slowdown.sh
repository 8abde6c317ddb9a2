#!/usr/bin/env bash
# Slowdown benchmark: what dirty tracking and a live migration cost the workload, in its own throughput.
# The workload is memwork --write-rate max: one thread rewrites pages round-robin as fast as it can (the pattern is
# kept, so the copy still verifies); its page writes per second (memwork's OPS counters, on its own clock) are the
# throughput. For each workload size (SIZES, MiB) a fresh memwork is measured for WINDOW seconds each:
#   untracked   before and after the tracked runs (their mean is the baseline: the machine is shared and drifts),
#   tracked     native/bin/track-pid attached, collecting every INTERVALS ms (refresh + harvest, as pre-copy does
#               between iterations), no copying: the cost of tracking alone (write-protect faults, harvest ioctls),
#   migrating   a real live migration (--mode precopy) over a veth limited to RATE: tracking, reading and sending
#               the pages, CRIU, all on the same machine; measured from just before migrate starts to the moment
#               the workload was frozen (memwork keeps the writes and time at the start of its largest heartbeat
#               gap, read on the target after the migration), so the downtime itself is not in the rate.
# Ratios are ops/s against the baseline (1.00 = no slowdown). Nothing here is a test: it measures.
# An unpaced writer dirties its whole memory faster than any link copies it, so pre-copy does not converge here
# (it stops at its iteration limit) and the downtime is that of a fully dirty workload: see downtime.sh for that.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SIZES=${SIZES:-"256 1024"}
INTERVALS=${INTERVALS:-"100 1000"}
WINDOW=${WINDOW:-3}
RATE=${RATE:-1gbit}
SRC=sd-src TGT=sd-tgt WPORT=9300
B=/tmp/migrate-slowdown

# downtime.sh sets MIGRATE_SETUP_DONE when it calls this script after its own setup.
[ -n "${MIGRATE_SETUP_DONE:-}" ] || bash "$REPO/scripts/setup.sh" >/dev/null 2>&1
# shellcheck source=../lib/hosts.sh
. "$REPO/scripts/lib/hosts.sh"
BIN=${MIGRATE_INSTALL_DIR:-/opt/migrate/bin}
MIGRATE=$BIN/migrate.d/migrate AGENTBIN=$BIN/migrate-agent.d/migrate-agent
MEMWORK=$REPO/native/bin/memwork TRACKPID=$REPO/native/bin/track-pid

# Processes this script started, by pid: the agent, the workload (source or restored copy), the unshare that
# started it (its one child is the workload, until that is migrated away), track-pid.
AGENT= WL= LAUNCHER= TP=
cleanup() {
  set +e
  [ -n "$TP" ] && kill "$TP" 2>/dev/null
  [ -n "$WL" ] && kill -KILL "$WL" 2>/dev/null
  [ -n "$LAUNCHER" ] && pkill -KILL -P "$LAUNCHER" 2>/dev/null
  [ -n "$AGENT" ] && kill "$AGENT" 2>/dev/null
  wait 2>/dev/null
  del_hosts "$SRC" "$TGT"
}
trap cleanup EXIT
del_hosts "$SRC" "$TGT" || true # leftovers of an interrupted run

make_hosts "$SRC" "$TGT" sds0 sdt0 10.244.0
nsenter --net=/run/netns/$SRC tc qdisc replace dev sds0 root tbf rate "$RATE" burst 256k latency 50ms

rm -rf "$B"
mkdir -p "$B"
umask 077
head -c 32 /dev/urandom | base64 >"$B/token"
nsenter --net=/run/netns/$TGT "$AGENTBIN" --listen 10.244.0.2:7070 --token-file "$B/token" --work-dir "$B/agent" \
  --log-dir "$B/logs" >"$B/agent.out" 2>&1 &
AGENT=$!
for _ in $(seq 100); do grep -q "listening on" "$B/agent.out" && break; sleep 0.1; done

query() { timeout "${QT:-10}" nsenter --net="/run/netns/$1" bash -c "exec 3<>/dev/tcp/127.0.0.1/$WPORT && echo $2 >&3 && cat <&3"; }
# field NAME LINE
field() { sed -n "s/.* $1=\([0-9a-z:]*\).*/\1/p" <<<"$2"; }
# The workload's pid as this (root) pid namespace sees it: the memwork whose data file is $1, in a pid namespace of
# its own (started under unshare -pf, so that the restored copy can have the same pid on the target).
workload_pid() {
  { pgrep -f "memwork --mib [0-9]* --port $WPORT --file $1( |$)" || true; } | while read -r p; do
    if [ "$(readlink /proc/"$p"/ns/pid)" != "$(readlink /proc/self/ns/pid)" ]; then echo "$p"; fi
  done | head -n1 || true # head may close the pipe on a second match (SIGPIPE under pipefail)
}
# rate OPS_BEFORE OPS_AFTER -> "writes/s writes-per-writer-cpu-second"
rate() {
  python3 - "$1" "$2" <<'PY'
import sys
f = [dict(kv.split("=", 1) for kv in a.split()[1:]) for a in sys.argv[1:]]
dw = int(f[1]["writes"]) - int(f[0]["writes"])
dt = int(f[1]["realtime_us"]) - int(f[0]["realtime_us"])
dc = int(f[1]["cpu_us"]) - int(f[0]["cpu_us"])
print(f"{dw * 1e6 / dt:.0f} {dw * 1e6 / max(dc, 1):.0f}")
PY
}
measure() { local a b; a=$(query "$SRC" OPS); sleep "$WINDOW"; b=$(query "$SRC" OPS); rate "$a" "$b"; }

rows=()
for mib in $SIZES; do
  data=$B/data-$mib
  nsenter --net=/run/netns/$SRC setsid unshare -pf setsid "$MEMWORK" --mib "$mib" --port $WPORT --file "$data" \
    --mix --zero-present --write-rate max --stdio-null &
  LAUNCHER=$! WL=
  for _ in $(seq 600); do
    WL=$(workload_pid "$data")
    [ -n "$WL" ] && query "$SRC" PING >/dev/null 2>&1 && break
    sleep 0.2
  done
  [ -n "$WL" ] || { echo "memwork --mib $mib did not start" >&2; exit 1; }
  sleep 1 # let the writer run

  read -r base1 cpu1 <<<"$(measure)"
  tracked=()
  for iv in $INTERVALS; do
    "$TRACKPID" "$WL" --interval-ms "$iv" >"$B/track-$mib-$iv.out" 2>"$B/track-$mib-$iv.err" &
    TP=$!
    for _ in $(seq 100); do grep -q '^ATTACHED' "$B/track-$mib-$iv.out" && break; sleep 0.1; done
    grep -q '^ATTACHED' "$B/track-$mib-$iv.out" || { echo "track-pid did not attach: $(cat "$B/track-$mib-$iv.err")" >&2; exit 1; }
    read -r ops cpu <<<"$(measure)"
    kill -TERM "$TP"
    wait "$TP" || { echo "track-pid failed: $(cat "$B/track-$mib-$iv.err")" >&2; exit 1; }
    TP=
    det=$(grep '^DETACHED' "$B/track-$mib-$iv.out")
    tracked+=("$iv $ops $cpu $(field harvest_us_avg "$det") $(field harvests "$det")")
    echo "[$mib MiB, tracked every $iv ms] $ops writes/s, $cpu per writer cpu-s; $det" >&2
  done
  read -r base2 cpu2 <<<"$(measure)"
  echo "[$mib MiB, untracked] $base1 and $base2 writes/s; $cpu1 and $cpu2 per writer cpu-s" >&2

  query "$SRC" RESETGAP >/dev/null
  before=$(query "$SRC" OPS)
  json=$(nsenter --net=/run/netns/$SRC "$MIGRATE" --to 10.244.0.2:7070 --token-file "$B/token" --mode precopy --json \
    --work-dir "$B/src" --log-dir "$B/logs" "$WL" 2>"$B/migrate-$mib.err" | tail -n1) ||
    { echo "migrate failed ($mib MiB): $json; see $B/migrate-$mib.err and $B/logs" >&2; exit 1; }
  # Right after a lazy restore the writer still faults its pages in (criu lazy-pages): allow for that.
  after=$(QT=300 query "$TGT" OPS)
  status=$(QT=300 query "$TGT" STATUS)
  echo "[$mib MiB, migrating] $json; target: $after" >&2
  WL=$(workload_pid "$data")
  query "$TGT" QUIT >/dev/null 2>&1 || true
  for _ in $(seq 50); do [ -n "$WL" ] && kill -0 "$WL" 2>/dev/null || break; sleep 0.1; done
  if [ -n "$WL" ]; then kill -KILL "$WL" 2>/dev/null || true; fi # QUIT normally ended it
  WL= LAUNCHER=

  rows+=("$(python3 - "$mib" "$base1" "$base2" "$cpu1" "$cpu2" "$before" "$after" "$(field verify "$status")" "$json" "${tracked[@]}" <<'PY'
import json, sys
mib, b1, b2, c1, c2, before, after, verify, js = sys.argv[1:10]
tracked = [t.split() for t in sys.argv[10:]]
base, cbase = (float(b1) + float(b2)) / 2, (float(c1) + float(c2)) / 2
kv = lambda s: dict(x.split("=", 1) for x in s.split()[1:])
a, b = kv(before), kv(after)
# from just before migrate to the last heartbeat before the freeze (the largest gap)
mig = (int(b["gap_writes"]) - int(a["writes"])) * 1e6 / (int(b["gap_start_us"]) - int(a["realtime_us"]))
run_s = (int(b["gap_start_us"]) - int(a["realtime_us"])) / 1e6
j = json.loads(js)
rng = f"{base / 1e6:.2f}M ({min(float(b1), float(b2)) / 1e6:.2f}-{max(float(b1), float(b2)) / 1e6:.2f})"
cells = [f"{mib + ' MiB':<9}", f"{rng:<22}"]
for iv, ops, cpu, hus, nh in tracked:
    cells.append(f"{float(ops) / base:5.2f} {float(cpu) / cbase:6.2f} {int(hus) / 1000:7.1f}")
cells.append(f"{mig / base:5.2f} {run_s:5.1f} {j.get('iterations', 0):>5} {int(b['maxgap_us']) / 1000:7.0f} {verify}")
print(" | ".join(cells))
PY
)")
done

echo
echo "Slowdown: memwork --write-rate max --mix --zero-present (unpaced round-robin page rewrites), windows of ${WINDOW} s;"
echo "migration over a veth limited to $RATE. Ratios: writes/s against the untracked baseline (1.00 = no slowdown)."
hdr="untracked writes/s    "
sub="mean (range)          "
for iv in $INTERVALS; do
  hdr+=" | $(printf '%-20s' "tracked, ${iv} ms")"
  sub+=" | ops/s cpu/op harv ms"
done
printf '%-9s | %s | %s\n' size "$hdr" "migrating (pre-copy)"
printf '%-9s | %s | %s\n' "" "$sub" "ops/s run s iters down ms verify"
for r in "${rows[@]}"; do echo "$r"; done
echo "(tracked: track-pid collecting every N ms, no copy; ops/s: throughput ratio; cpu/op: writes per writer CPU second,"
echo " ratio, so below 1 means each write cost more CPU (write-protect faults), while ops/s below cpu/op means CPU"
echo " taken by others; harv ms: one collection, average; migrating: from migrate's start to the freeze, run s long)"
