#!/usr/bin/env bash
# The soak: HOPS (default 100) live migrations back and forth between two hosts that both run an agent, of Debian's
# redis-server with its connections and service address, under redis-benchmark's load from a third host, its data
# checked after every hop (tests/Integration.Tests/SoakTests.cs; the suite runs it with 10 hops). Prints a row per
# hop (downtime migrate reported and the longest wait a client saw, lost and duplicated writes, each agent's
# resident memory, .NET heap and open descriptors) and one summary line:
#   SOAK hops=N errors=N lost_writes=N duplicated_writes=N benchmark_errors=N requests=N max_downtime_ms=N ...
# Exit status: the test's (0: no error, no lost or duplicated write, nothing grew). Run as root.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HOPS=${HOPS:-100}
[ "$(id -u)" -eq 0 ] || { echo "run as root" >&2; exit 2; }
bash "$REPO/scripts/setup.sh" >/dev/null 2>&1 || { echo "setup failed: run bash scripts/setup.sh" >&2; exit 2; }
cd "$REPO"
dotnet build tests/Integration.Tests -c Release --nologo -v quiet >/dev/null
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
SOAK_HOPS=$HOPS timeout $((HOPS * 60 + 300)) dotnet test tests/Integration.Tests -c Release --no-build --nologo \
  --filter "FullyQualifiedName~SoakTests" --logger "console;verbosity=detailed" >"$log" 2>&1
rc=$?
set -e
# The table and the summary, as the test wrote them (each once: xunit repeats a failed test's output).
grep -E '^ +(hop \||[0-9]+ \|)' "$log" | sed 's/^ *//' | awk '!seen[$0]++'
grep -E '^ +SOAK ' "$log" | sed 's/^ *//' | tail -n 1
if [ "$rc" -ne 0 ]; then
  grep -E 'Error Message|Assert' -A3 "$log" | head -n 20 >&2
fi
exit "$rc"
