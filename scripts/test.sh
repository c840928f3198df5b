#!/usr/bin/env bash
# Ferry's whole test suite: the command the README gives and the one CI runs (.ci/run).
# It installs what the tests need when it is missing: a Python venv with pynsq, python-snappy and
# grpcio (.venv), Chromium with chromedriver and Prometheus (Debian packages), and the cargo-fuzz
# tool for the decoder fuzz run. Every step runs even when an earlier one failed (tests with
# --no-fail-fast), then a summary lists each step, the test counts and the failed tests; the
# exit status is non-zero if anything failed.
set -uo pipefail
cd "$(dirname "$0")/.."
# A one-shot build gains nothing from incremental artifacts but their disk space.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

log=$(mktemp)
trap 'rm -f "$log"' EXIT
started=$SECONDS
summary=()
failed=0

# step NAME COMMAND...: runs the command, keeping its output in $log too.
step() {
  local name=$1
  shift
  echo "== $name"
  local t0=$SECONDS
  if "$@" 2>&1 | tee -a "$log"; then
    summary+=("ok      $name ($((SECONDS - t0)) s)")
  else
    summary+=("FAILED  $name ($((SECONDS - t0)) s)")
    failed=1
  fi
}

step "test dependencies" scripts/setup-test-deps.sh
step "cargo fmt --check" cargo fmt --all -- --check
step "cargo clippy" cargo clippy --workspace --all-targets --locked -- -D warnings
step "cargo test" cargo test --workspace --locked --no-fail-fast
step "fuzz: protocol decoders for ${FERRY_FUZZ_SECONDS:-60}s" scripts/fuzz.sh "${FERRY_FUZZ_SECONDS:-60}"

echo
echo "== summary ($((SECONDS - started)) s)"
printf '%s\n' "${summary[@]}"
awk '/^test result:/ { p += $4; f += $6; i += $8 } END { printf "tests: %d passed, %d failed, %d ignored\n", p, f, i }' "$log"
grep -E '^test .* \.\.\. FAILED$' "$log" | sed 's/^/  /' || true
exit "$failed"
