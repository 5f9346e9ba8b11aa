#!/usr/bin/env bash
# Alerting latency, sample publish -> alert on hws.alerts, with release
# binaries: a fresh nats-server 2.15, `hwsched alerting` with the built-in rules
# plus one bench rule (bench.value > 50, for 0s), and `hwsched bench alerts`.
# Usage: scripts/bench-alerts.sh [WORKERS] [ROUNDS]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd); cd "$root"
workers=${1:-100}; rounds=${2:-20}
. scripts/bench-nats.sh
{ cat services/alerting/rules/defaults.yaml
  echo '  - {name: BenchThreshold, metric: bench.value, threshold: 50, for: 0s, severity: info}'
} > "$dir/rules.yaml"
HWSCHED_LOG=warn $bin alerting --rules "$dir/rules.yaml" 2>"$dir/alerting.log" & pids+=($!); alerting_pid=$!
until $bin bench alerts --workers 1 --rounds 1 >/dev/null 2>&1; do sleep 0.2; done
$bin bench alerts --workers "$workers" --rounds "$rounds"
printf "alerting CPU %s s\n" "$(awk "{printf \"%.1f\", (\$14+\$15)/100}" /proc/$alerting_pid/stat)"
