#!/usr/bin/env bash
# Installs what the tests need, when missing: a local Python venv (.venv) with the packages of
# tests/python/requirements.txt from PyPI (pynsq, python-snappy, grpcio, ...), re-installed when that
# file changes; headless Chromium with chromedriver (Debian's packages) for admin-ui's
# browser tests; and Prometheus with promtool (Debian's package) for the checks of
# deploy/prometheus/ and the test that runs a real Prometheus against brokerd.
set -euo pipefail
cd "$(dirname "$0")/.."
req=tests/python/requirements.txt
want=$(sha256sum "$req" | cut -d' ' -f1)
have=$(cat .venv/.requirements-sha256 2>/dev/null || true)
if [ "$want" != "$have" ] || ! .venv/bin/python -c 'import nsq' >/dev/null 2>&1; then
  if [ ! -x .venv/bin/python ]; then
    if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
      apt-get update -qq && apt-get install -y -qq python3-venv
    fi
    rm -rf .venv
    python3 -m venv .venv
  fi
  .venv/bin/pip install --quiet --disable-pip-version-check -r "$req"
  echo "$want" > .venv/.requirements-sha256
fi
.venv/bin/python -c 'import nsq, snappy, tornado, grpc, grpc_tools.protoc; print("pynsq", nsq.__version__, "tornado", tornado.version, "grpcio", grpc.__version__)'
if ! command -v chromedriver >/dev/null 2>&1 || [ ! -x /usr/lib/chromium/chromium ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver
fi
chromedriver --version
if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
  # Only the binaries are used: the tests start their own server on a free port.
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus
fi
promtool --version | head -1
