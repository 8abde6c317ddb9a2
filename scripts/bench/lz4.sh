#!/usr/bin/env bash
# LZ4 benchmark: K4os.Compression.LZ4 (managed) against the system liblz4 (P/Invoke), the two candidates of
# src/PageServer/Streaming/Lz4.cs, in the same run, on ONE core (taskset -c CPU, default 0), LZ4 block format on
# batches of 256 pages of 4 KiB (1 MiB, PageStreamProtocol.MaxBatchPages) with a destination of LZ4's worst-case size,
# as PageFrameWriter compresses them. Mixes: typical heap (1/4 random, 1/4 text-like, 1/2 sparse structured), random,
# text, mostly-zero pages with a few values (no page all zero: the stream elides those before LZ4).
# Codecs: liblz4 LZ4_compress_fast at acceleration 1 (the stream's default) and 8 (for reference: K4os's block API
# has no acceleration), K4os LZ4Codec.Encode L00_FAST; decompression LZ4_decompress_safe / LZ4Codec.Decode.
# Every compressed block is checked to decode back to its batch with both libraries, and every timed pass's output is
# compared with the original. Prints compress / decompress MB/s (median of REPS repetitions, each at least CELL_SECONDS,
# after a warm-up) and the ratio as a table. About a minute. Needs liblz4.so.1 (Debian's liblz4-1, installed here
# if missing) and the .NET SDK; no root otherwise. Nothing here is a test: it measures.
#   REPS (default 7), CELL_SECONDS (per repetition and cell, default 0.25), BATCHES (distinct batches per mix, default 8),
#   CPU (default 0).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CPU=${CPU:-0}
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1

if ! ldconfig -p | grep -q 'liblz4\.so\.1 '; then
  [ "$(id -u)" -eq 0 ] || { echo "liblz4.so.1 missing: apt-get install liblz4-1" >&2; exit 1; }
  apt-get install -y -qq liblz4-1 >&2
fi
command -v taskset >/dev/null || { echo "taskset (util-linux) is needed to pin the benchmark to one CPU" >&2; exit 1; }

OUT=${TMPDIR:-/tmp}/migrate-lz4bench
dotnet build "$HERE/lz4/Lz4Bench.csproj" -c Release -o "$OUT" --nologo -v quiet >&2
LZ4BENCH_REPS=${REPS:-7} LZ4BENCH_SECONDS=${CELL_SECONDS:-0.25} LZ4BENCH_BATCHES=${BATCHES:-8} \
  exec taskset -c "$CPU" dotnet "$OUT/lz4bench.dll"
