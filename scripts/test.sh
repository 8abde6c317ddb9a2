#!/usr/bin/env bash
# The test suite: setup (idempotent), format check, then every test project with real CRIU, real
# processes and real network namespaces. Run as root on Debian 12. Ends with "N passed, N failed".
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1

bash scripts/setup.sh

echo "[test] native: format check and C tests (make check)" >&2
make -s -C native format-check check >&2

echo "[test] dotnet format --verify-no-changes" >&2
dotnet format Migration.sln --verify-no-changes --severity warn >&2

echo "[test] building" >&2
dotnet build Migration.sln -c Release --nologo -v quiet >&2

log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
dotnet test Migration.sln -c Release --no-build --nologo --logger "console;verbosity=normal" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e

# One closing line over all test assemblies (vstest's per-assembly summary: "Passed: N", "Failed: N", "Skipped: N").
awk '/^[[:space:]]*Passed:[[:space:]]*[0-9]+[[:space:]]*$/  { p += $2 }
     /^[[:space:]]*Failed:[[:space:]]*[0-9]+[[:space:]]*$/  { f += $2 }
     /^[[:space:]]*Skipped:[[:space:]]*[0-9]+[[:space:]]*$/ { s += $2 }
     END { printf "%d passed, %d failed, %d skipped\n", p, f, s }' "$log"
# The failures again, with their messages, where the end of a CI log shows them.
if grep -qE '^[[:space:]]+Failed [A-Za-z]' "$log"; then
  echo "[test] failed tests:" >&2
  awk '/^[[:space:]]+Failed [A-Za-z]/ { n = 12 } n > 0 { print; n-- }' "$log" >&2
fi
leftover=$(ip netns list | grep -E '^mg[st]-' || true)
if [ -n "$leftover" ]; then
  echo "[test] ERROR: tests left network namespaces behind: $leftover" >&2
  rc=1
fi
exit "$rc"
