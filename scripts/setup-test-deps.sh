#!/usr/bin/env bash
# Installs what the tests need, when missing: a local Python venv (.venv) with the packages of
# tests/python/requirements.txt from PyPI (pynsq for NSQ interop, grpcio + grpcio-tools for the
# gRPC API). A venv that lacks any of them (e.g. made before a package was added) is topped up.
set -euo pipefail
cd "$(dirname "$0")/.."
check='import nsq, tornado, grpc, grpc_tools.protoc'
if ! .venv/bin/python -c "$check" >/dev/null 2>&1; then
  if [ ! -x .venv/bin/python ]; then
    if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
      apt-get update -qq && apt-get install -y -qq python3-venv
    fi
    rm -rf .venv
    python3 -m venv .venv
  fi
  .venv/bin/pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
fi
.venv/bin/python -c 'import nsq, tornado, grpc; print("pynsq", nsq.__version__, "tornado", tornado.version, "grpcio", grpc.__version__)'
