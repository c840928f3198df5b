#!/usr/bin/env bash
# Installs what the tests need, when missing: a local Python venv (.venv) with pynsq from PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! .venv/bin/python -c 'import nsq' >/dev/null 2>&1; then
  if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq python3-venv
  fi
  rm -rf .venv
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
fi
.venv/bin/python -c 'import nsq, tornado; print("pynsq", nsq.__version__, "tornado", tornado.version)'
