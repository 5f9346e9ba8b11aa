# Sourced by the bench scripts: builds the release binary ($bin) and starts a
# fresh nats-server 2.15 on a free loopback port with its own store in a
# temporary directory ($dir). HWSCHED_NATS_URL points at it; every process
# added to $pids is stopped, and $dir removed, on exit. With NATS_NODES=3 it
# starts a three-node JetStream cluster on loopback instead (routes, a store
# per node), HWSCHED_NATS_URL lists every node and HWSCHED_JS_REPLICAS=3.
# $nats_pids holds the nats-server pids.
cargo build --release -q -p hwsched
bin=target/release/hwsched
dir=$(mktemp -d); pids=(); nats_pids=()
trap 'for p in "${pids[@]}"; do kill -TERM $p 2>/dev/null; done; wait; rm -rf "$dir"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
nodes=${NATS_NODES:-1}
if [ "$nodes" = 1 ]; then
  port=$(free_port)
  build/venv/bin/nats-server -a 127.0.0.1 -p "$port" -js -sd "$dir/js" 2>"$dir/nats.log" & pids+=($!); nats_pids+=($!)
  export HWSCHED_NATS_URL=nats://127.0.0.1:$port HWSCHED_LOG=warn
  until grep -q "Server is ready" "$dir/nats.log"; do sleep 0.1; done
else
  ports=(); cports=(); routes=""
  for ((i = 0; i < nodes; i++)); do ports+=("$(free_port)"); cports+=("$(free_port)"); done
  for c in "${cports[@]}"; do routes+="${routes:+,}nats-route://127.0.0.1:$c"; done
  urls=""
  for ((i = 0; i < nodes; i++)); do
    build/venv/bin/nats-server -a 127.0.0.1 -p "${ports[i]}" -js -sd "$dir/js$i" --name "n$i" \
      --cluster_name bench --cluster "nats://127.0.0.1:${cports[i]}" --routes "$routes" \
      -m "$(free_port)" 2>"$dir/nats$i.log" & pids+=($!); nats_pids+=($!)
    urls+="${urls:+,}nats://127.0.0.1:${ports[i]}"
  done
  export HWSCHED_NATS_URL=$urls HWSCHED_JS_REPLICAS=$nodes HWSCHED_LOG=warn
  for ((i = 0; i < nodes; i++)); do
    until grep -q "JetStream cluster new metadata leader\|Self is new JetStream cluster metadata leader" "$dir/nats$i.log"; do sleep 0.1; done
  done
fi
# nats-server CPU seconds, all nodes
nats_cpu() { local p t=0; for p in "${nats_pids[@]}"; do t=$(awk -v t="$t" '{printf "%.1f", t + ($14+$15)/100}' "/proc/$p/stat"); done; echo "$t"; }
