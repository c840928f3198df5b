#!/usr/bin/env bash
# Ferry's whole test suite: the command the README gives and the one CI runs (.ci/run).
# It installs what the tests need when it is missing: a Python venv with pynsq, python-snappy and
# grpcio (.venv), Chromium with chromedriver, and the cargo-fuzz tool for the decoder fuzz run.
set -euo pipefail
cd "$(dirname "$0")/.."
# A one-shot build gains nothing from incremental artifacts but their disk space.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

echo "== test dependencies"
scripts/setup-test-deps.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo test"
cargo test --workspace --locked --no-fail-fast

echo "== fuzz: protocol decoders for ${FERRY_FUZZ_SECONDS:-60}s"
scripts/fuzz.sh "${FERRY_FUZZ_SECONDS:-60}"
