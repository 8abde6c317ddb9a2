#!/usr/bin/env bash
# Demo: a live process moved between two hosts on this machine.
#   - setup (idempotent): CRIU 4.2.1, the .NET build, migrate and migrate-agent on PATH;
#   - two hosts: network namespaces demo-src (10.240.0.1) and demo-tgt (10.240.0.2) joined by a veth pair;
#   - migrate-agent on demo-tgt; a workload (memwork: 256 MiB with a known pattern, an open file, a
#     listening socket, a 1 ms heartbeat) on demo-src, as init of its own pid namespace;
#   - migrate --to 10.240.0.2:7070 PID, then the workload is asked on demo-tgt whether its memory is intact.
# Everything it creates is removed at exit. Options: MIB=N (workload size, default 256).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MIB=${MIB:-256}
SRC=demo-src TGT=demo-tgt PORT=7070 WPORT=9000
DEMO=/tmp/migrate-demo

bash "$REPO/scripts/setup.sh"
# shellcheck source=lib/hosts.sh
. "$REPO/scripts/lib/hosts.sh"

say() { printf '\n== %s\n' "$*"; }
query() { # query NETNS COMMAND: one line to the workload's control port
  nsenter --net="/run/netns/$1" bash -c "exec 3<>/dev/tcp/127.0.0.1/$WPORT && echo $2 >&3 && cat <&3"
}
cleanup() {
  set +e
  [ -n "${AGENT_PID:-}" ] && kill "$AGENT_PID" 2>/dev/null
  pkill -f "migrate-agent --listen .* --work-dir $DEMO/agent" 2>/dev/null
  pkill -KILL -f "memwork --mib $MIB --port $WPORT --file $DEMO/data" 2>/dev/null
  del_hosts "$SRC" "$TGT"
  wait 2>/dev/null
}
trap cleanup EXIT
cleanup  # leftovers of an interrupted earlier run

say "two hosts: $SRC (10.240.0.1) and $TGT (10.240.0.2)"
make_hosts "$SRC" "$TGT" dsrc0 dtgt0 10.240.0

rm -rf "$DEMO"
mkdir -p "$DEMO"
umask 077
head -c 32 /dev/urandom | base64 >"$DEMO/token"

say "migrate-agent on $TGT"
nsenter --net="/run/netns/$TGT" migrate-agent --listen 10.240.0.2:$PORT --token-file "$DEMO/token" \
  --work-dir "$DEMO/agent" --log-dir "$DEMO/logs" >"$DEMO/agent.out" 2>&1 &
AGENT_PID=$!
for _ in $(seq 100); do grep -q "listening on" "$DEMO/agent.out" && break; sleep 0.1; done
cat "$DEMO/agent.out"

say "workload on $SRC: memwork, $MIB MiB"
nsenter --net="/run/netns/$SRC" setsid unshare -pf setsid /opt/migrate/bin/memwork \
  --mib "$MIB" --port $WPORT --file "$DEMO/data" --mix --stdio-null &
for _ in $(seq 300); do query "$SRC" PING >/dev/null 2>&1 && break; sleep 0.1; done
PID=$(pgrep -f "memwork --mib $MIB --port $WPORT --file $DEMO/data" | while read -r p; do
  [ "$(readlink /proc/"$p"/ns/pid)" != "$(readlink /proc/self/ns/pid)" ] && echo "$p"; done | head -n1 || true)
echo "workload pid $PID: $(query "$SRC" STATUS)"
query "$SRC" RESETGAP >/dev/null

say "migrate --to 10.240.0.2:$PORT $PID"
nsenter --net="/run/netns/$SRC" migrate --to 10.240.0.2:$PORT --token-file "$DEMO/token" --log-dir "$DEMO/logs" "$PID"

say "after the migration"
if kill -0 "$PID" 2>/dev/null && [ "$(ps -o stat= -p "$PID" | cut -c1)" != Z ]; then
  echo "ERROR: the source copy (pid $PID) still runs" >&2
  exit 1
fi
echo "source copy (pid $PID) is gone"
status=$(query "$TGT" STATUS)
echo "workload answers on $TGT: $status"
case "$status" in *verify=ok*file=ok*) ;; *) echo "ERROR: workload on target is not intact" >&2; exit 1 ;; esac
gap=$(sed -n 's/.*maxgap_us=\([0-9]*\).*/\1/p' <<<"$status")
echo "the workload's own heartbeat paused for $((gap / 1000)) ms"
say "demo complete"
