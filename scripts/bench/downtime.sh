#!/usr/bin/env bash
# Downtime benchmark: cold against live (pre-copy) migration, side by side in one run, over a veth link
# limited to RATE (default 1gbit) with tc tbf. For each workload size (SIZES, MiB) and write rate (WRITES, % of its
# pages rewritten per second), a fresh memwork workload is migrated once cold and once live.
# Downtime is what the workload saw: the largest gap in its own 1 ms heartbeat (memwork's maxgap_us), reset just
# before the migration and read on the target after it. Also printed: migrate's own frozen time, total time,
# bytes on the wire, bytes moved while frozen, pre-copy iterations. Nothing here is a test: it measures.
# Then scripts/bench/slowdown.sh (same SIZES and RATE) prints the workload's slowdown while tracked and while
# migrated; SLOWDOWN=0 skips it.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SIZES=${SIZES:-"256 1024"}
WRITES=${WRITES:-"1 10"}
RATE=${RATE:-1gbit}
SRC=dt-src TGT=dt-tgt WPORT=9200
B=/tmp/migrate-downtime

bash "$REPO/scripts/setup.sh" >/dev/null 2>&1
# shellcheck source=../lib/hosts.sh
. "$REPO/scripts/lib/hosts.sh"
BIN=${MIGRATE_INSTALL_DIR:-/opt/migrate/bin}
MIGRATE=$BIN/migrate.d/migrate AGENTBIN=$BIN/migrate-agent.d/migrate-agent

cleanup() {
  set +e
  [ -n "${AGENT:-}" ] && kill "$AGENT" 2>/dev/null
  pkill -f "migrate-agent --listen .* --work-dir $B/agent" 2>/dev/null
  pkill -KILL -f "memwork --mib [0-9]* --port $WPORT" 2>/dev/null
  del_hosts "$SRC" "$TGT"
  wait 2>/dev/null
}
trap cleanup EXIT
cleanup

make_hosts "$SRC" "$TGT" dts0 dtt0 10.243.0
nsenter --net=/run/netns/$SRC tc qdisc replace dev dts0 root tbf rate "$RATE" burst 256k latency 50ms

rm -rf "$B"
mkdir -p "$B"
umask 077
head -c 32 /dev/urandom | base64 >"$B/token"
nsenter --net=/run/netns/$TGT "$AGENTBIN" --listen 10.243.0.2:7070 --token-file "$B/token" --work-dir "$B/agent" \
  --log-dir "$B/logs" >"$B/agent.out" 2>&1 &
AGENT=$!
for _ in $(seq 100); do grep -q "listening on" "$B/agent.out" && break; sleep 0.1; done

query() { nsenter --net="/run/netns/$1" bash -c "exec 3<>/dev/tcp/127.0.0.1/$WPORT && echo $2 >&3 && cat <&3"; }

rows=()
for mib in $SIZES; do
  for w in $WRITES; do
    for mode in cold precopy; do
      pkill -KILL -f "memwork --mib [0-9]* --port $WPORT" 2>/dev/null || true
      sleep 0.3
      nsenter --net=/run/netns/$SRC setsid unshare -pf setsid "$REPO/native/bin/memwork" --mib "$mib" --port $WPORT \
        --file "$B/data-$mib-$w-$mode" --mix --zero-present --write-rate "$w" --stdio-null &
      PID=
      for _ in $(seq 600); do
        PID=$(pgrep -f "memwork --mib $mib --port $WPORT --file $B/data-$mib-$w-$mode" | while read -r p; do
          [ "$(readlink /proc/"$p"/ns/pid)" != "$(readlink /proc/self/ns/pid)" ] && echo "$p"; done | head -n1 || true)
        [ -n "$PID" ] && query "$SRC" PING >/dev/null 2>&1 && break
        sleep 0.2
      done
      sleep 1 # let the writer run
      query "$SRC" RESETGAP >/dev/null
      json=$(nsenter --net=/run/netns/$SRC "$MIGRATE" --to 10.243.0.2:7070 --token-file "$B/token" --mode "$mode" --json \
        --work-dir "$B/src" --log-dir "$B/logs" "$PID" 2>"$B/migrate-$mib-$w-$mode.err" | tail -n1)
      status=$(query "$TGT" STATUS)
      gap=$(sed -n 's/.*maxgap_us=\([0-9]*\).*/\1/p' <<<"$status")
      verify=$(sed -n 's/.*verify=\([a-z:0-9]*\).*/\1/p' <<<"$status")
      echo "[$mib MiB, $w%/s, $mode] gap ${gap}us verify=$verify $json" >&2
      rows+=("$mib $w $mode $gap $verify $(python3 -c 'import json,sys; j=json.loads(sys.argv[1]); print(j["frozenMs"], j["totalMs"], j["bytesSent"], j.get("bytesFrozen", 0), j.get("iterations", 0))' "$json")")
    done
  done
done

echo
echo "Downtime, cold vs live, veth limited to $RATE; workload: memwork --mix --zero-present (1/3 zero, 1/3 text, 1/3 random)"
printf '%-8s %-6s %-8s | %-13s %-10s %-9s %-11s %-12s %-5s | %s\n' size writes mode "downtime ms" "frozen ms" "total ms" "MiB sent" "MiB frozen" iters verify
for r in "${rows[@]}"; do
  read -r mib w mode gap verify frozen total sent fbytes iters <<<"$r"
  python3 - "$mib" "$w" "$mode" "$gap" "$verify" "$frozen" "$total" "$sent" "$fbytes" "$iters" <<'PY'
import sys
mib, w, mode, gap, verify, frozen, total, sent, fbytes, iters = sys.argv[1:]
print(f"{mib+' MiB':<8} {w+'%/s':<6} {mode:<8} | {int(gap)/1000:13.0f} {float(frozen):10.0f} {float(total):9.0f} {int(sent)/2**20:11.1f} {int(fbytes)/2**20:12.1f} {iters:>5} | {verify}")
PY
done
echo "(downtime: the workload's own largest heartbeat gap; frozen: migrate's timer from freeze to resume on the target)"

if [ "${SLOWDOWN:-1}" != 0 ]; then
  echo
  SIZES=$SIZES RATE=$RATE MIGRATE_SETUP_DONE=1 bash "$REPO/scripts/bench/slowdown.sh"
fi
