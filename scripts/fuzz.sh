#!/usr/bin/env bash
# Runs the protocol decoder fuzz target (proto/fuzz) for N seconds (default 60) with cargo-fuzz on
# the nightly toolchain, installing cargo-fuzz if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz: no nightly toolchain (rustup toolchain install nightly); cannot run cargo-fuzz" >&2
  exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked --quiet
fi
cd proto
log="$(mktemp)"
if ! cargo +nightly fuzz run decode_command -- -max_total_time="$secs" -print_final_stats=1 >"$log" 2>&1; then
  tail -n 60 "$log" >&2
  echo "fuzz: the decode_command target failed (crash, or it did not build)" >&2
  exit 1
fi
grep -E 'Done [0-9]+ runs|stat::number_of_executed_units|stat::average_exec_per_sec' "$log" || tail -n 5 "$log"
rm -f "$log"
