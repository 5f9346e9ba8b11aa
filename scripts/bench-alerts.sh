#!/usr/bin/env bash
# Alerting latency with release binaries: a fresh nats-server 2.15,
# `hwsched alerting` with the built-in rules and route plus one bench rule
# (bench.value > 50, for 0s) posting to a webhook that `hwsched bench alerts`
# serves; measured from the sample's publish to the alert on hws.alerts and to
# the webhook notification. Rounds are spaced wider than the route's 5 s group
# interval so each transition is measured, not batched with the previous one.
# Usage: scripts/bench-alerts.sh [WORKERS] [ROUNDS] [INTERVAL_MS]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd); cd "$root"
workers=${1:-100}; rounds=${2:-6}; interval=${3:-5500}
. scripts/bench-nats.sh
{ cat services/alerting/rules/defaults.yaml
  echo '  - {name: BenchThreshold, metric: bench.value, threshold: 50, for: 0s, severity: info}'
} > "$dir/rules.yaml"
hook=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
HWSCHED_LOG=warn $bin alerting --rules "$dir/rules.yaml" --webhook "http://127.0.0.1:$hook/" 2>"$dir/alerting.log" &
pids+=($!); alerting_pid=$!
# warm-up (its notification is refused: nothing listens yet), then a quiet group interval
until $bin bench alerts --workers 1 --rounds 2 --interval-ms 0 >/dev/null 2>&1; do sleep 0.2; done
sleep 6
$bin bench alerts --workers "$workers" --rounds "$rounds" --interval-ms "$interval" --webhook-listen "127.0.0.1:$hook"
printf "alerting CPU %s s\n" "$(awk "{printf \"%.1f\", (\$14+\$15)/100}" /proc/$alerting_pid/stat)"
