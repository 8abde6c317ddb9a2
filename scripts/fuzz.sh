#!/usr/bin/env bash
# Fuzzing (not CI): malformed inputs into every decoder that reads the network or an image file (tests/Fuzz), each
# target in its own process on one core, deterministic from SEED. Prints one row per target:
#   target | inputs | rejected (the decoder's documented refusal) | accepted | crashes (any other exception, or a
#   broken promise of the decoder) | hangs (an input over 1 s, and again when rerun) | stalls (over 1 s once, fast
#   when rerun: the machine, not the decoder) | budget (inputs that allocated more than their target's constant plus
#   16 bytes per input byte, and again when rerun: an allocation driven by a length field) | max ms per input |
#   max KiB allocated by one input | peak RSS of the process | seconds
# Targets: page-frame page-stream criu-page-server criu-lazy-pages criu-image grpc-control grpc-put-image manifest
#
# Usage: scripts/fuzz.sh                                   10^6 inputs per target, seed 1
#        ITERATIONS=N SEED=S TARGETS="page-frame criu-image" CPU=N scripts/fuzz.sh
#        SEED=S ITERATION=I TARGETS=t scripts/fuzz.sh      replays one input (hex and outcome)
# Failing inputs are written to FAILURES (default /tmp/migrate-fuzz-failures) as TARGET-SEED-ITERATION.bin.
# Exit status: 0 when no target had a crash, hang or input over budget, 1 otherwise.
set -uo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ITERATIONS=${ITERATIONS:-1000000}
SEED=${SEED:-1}
TARGETS=${TARGETS:-page-frame page-stream criu-page-server criu-lazy-pages criu-image grpc-control grpc-put-image manifest}
CPU=${CPU:-$(($(nproc) - 1))}
FAILURES=${FAILURES:-/tmp/migrate-fuzz-failures}
DLL=$REPO/tests/Fuzz/bin/Release/net10.0/Migration.Fuzz.dll

dotnet build "$REPO/tests/Fuzz/Fuzz.csproj" -c Release -v quiet --nologo >/dev/null || { echo "build failed" >&2; exit 2; }
# One core, one GC heap: background work on a shared machine.
export DOTNET_gcServer=0 DOTNET_GCHeapCount=1 DOTNET_TieredPGO=0
run() { nice -n 10 taskset -c "$CPU" dotnet "$DLL" "$@"; }

if [ -n "${ITERATION:-}" ]; then
  for t in $TARGETS; do run --targets "$t" --seed "$SEED" --iteration "$ITERATION"; done
  exit 0
fi

status=0
rows=()
start=$(date +%s)
for t in $TARGETS; do
  row=$(run --targets "$t" --seed "$SEED" --iterations "$ITERATIONS" --failures "$FAILURES") || status=1
  rows+=("$row")
done

printf '%-17s %9s %9s %9s %7s %5s %6s %6s %8s %8s %8s %7s\n' target inputs rejected accepted crashes hangs stalls budget "max ms" "max KiB" "RSS MiB" seconds
for row in "${rows[@]}"; do
  IFS=$'\t' read -r target inputs rejected accepted crashes hangs stalls budget maxms maxkib rss secs <<<"$row"
  printf '%-17s %9s %9s %9s %7s %5s %6s %6s %8s %8s %8s %7s\n' "$target" "$inputs" "$rejected" "$accepted" "$crashes" "$hangs" "$stalls" "$budget" "$maxms" "$maxkib" "$rss" "$secs"
done
echo "seed $SEED, $ITERATIONS inputs per target, $(($(date +%s) - start)) s in all; failing inputs (if any) in $FAILURES"
exit $status
