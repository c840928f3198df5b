#!/usr/bin/env bash
# Ferry's whole test suite: the command the README gives and the one CI runs (.ci/run).
# It installs what the tests need when it is missing: a Python venv with pynsq and grpcio (.venv) and the
# cargo-fuzz tool for the decoder fuzz run.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== test dependencies"
scripts/setup-test-deps.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo test"
cargo test --workspace --locked

echo "== fuzz: protocol decoders for ${FERRY_FUZZ_SECONDS:-60}s"
scripts/fuzz.sh "${FERRY_FUZZ_SECONDS:-60}"
