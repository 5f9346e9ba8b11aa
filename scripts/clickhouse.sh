#!/usr/bin/env bash
# Starts or stops a loopback ClickHouse whose data lives under build/.
#   scripts/clickhouse.sh start DIR HTTP_PORT TCP_PORT   (prints nothing; exits 0 when it answers)
#   scripts/clickhouse.sh stop DIR
# Installs Debian's clickhouse-server when missing (needs root and apt).
set -euo pipefail
cmd=${1:?start|stop}; dir=$(realpath -m "${2:?dir}")
root=$(cd "$(dirname "$0")/.." && pwd)

server_bin() {
  command -v clickhouse-server 2>/dev/null || { [ -x /usr/sbin/clickhouse-server ] && echo /usr/sbin/clickhouse-server; } || true
}

case "$cmd" in
start)
  http=${3:-18123}; tcp=${4:-19000}
  bin=$(server_bin)
  if [ -z "$bin" ]; then
    # one installer at a time (tests start private servers concurrently)
    exec 9>/tmp/hwsched-clickhouse-install.lock; flock 9
    bin=$(server_bin)
  fi
  if [ -z "$bin" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "installing clickhouse-server (Debian package)..." >&2
      apt-get update -qq >&2
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clickhouse-server clickhouse-client >&2
      bin=$(server_bin)
    else
      echo "clickhouse-server is not installed and cannot be installed here (needs root + apt)" >&2
      exit 3
    fi
  fi
  if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
    echo "ClickHouse already running (pid $(cat "$dir/pid"))" >&2
  else
    mkdir -p "$dir"/{data,tmp,user_files,format_schemas,log}
    # HTTPS as well when CH_HTTPS_PORT, CH_TLS_CERT and CH_TLS_KEY are set (the TLS test)
    https=""
    if [ -n "${CH_HTTPS_PORT:-}" ]; then
      https="<https_port>$CH_HTTPS_PORT</https_port><openSSL><server><certificateFile>$CH_TLS_CERT</certificateFile><privateKeyFile>$CH_TLS_KEY</privateKeyFile><verificationMode>none</verificationMode><loadDefaultCAFile>false</loadDefaultCAFile><cacheSessions>true</cacheSessions><preferServerCiphers>true</preferServerCiphers></server></openSSL>"
    fi
    sed -e "s#@DIR@#$dir#g" -e "s#@HTTP_PORT@#$http#g" -e "s#@TCP_PORT@#$tcp#g" -e "s#<!--@HTTPS@-->#$https#" \
      "$root/deploy/clickhouse-local/config.xml.in" > "$dir/config.xml"
    cp "$root/deploy/clickhouse-local/users.xml" "$dir/users.xml"
    (cd "$dir" && exec "$bin" --config-file="$dir/config.xml" >"$dir/log/stdout.log" 2>&1) &
    echo $! > "$dir/pid"
  fi
  for _ in $(seq 1 150); do
    if curl -sf "http://127.0.0.1:$http/ping" >/dev/null 2>&1; then exit 0; fi
    kill -0 "$(cat "$dir/pid")" 2>/dev/null || { echo "ClickHouse exited; see $dir/log/" >&2; tail -20 "$dir/log/server.err.log" >&2 || true; exit 1; }
    sleep 0.2
  done
  echo "ClickHouse did not answer on port $http within 30 s" >&2; exit 1
  ;;
stop)
  if [ -f "$dir/pid" ]; then
    pid=$(cat "$dir/pid"); kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$dir/pid"
  fi
  ;;
*) echo "usage: $0 start|stop DIR [HTTP_PORT TCP_PORT]" >&2; exit 2 ;;
esac
