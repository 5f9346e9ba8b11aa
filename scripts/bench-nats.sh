# Sourced by the bench scripts: builds the release binary ($bin) and starts a
# fresh nats-server 2.15 on a free loopback port with its own store in a
# temporary directory ($dir). HWSCHED_NATS_URL points at it; every process
# added to $pids is stopped, and $dir removed, on exit.
cargo build --release -q -p hwsched
bin=target/release/hwsched
dir=$(mktemp -d); pids=()
trap 'for p in "${pids[@]}"; do kill -TERM $p 2>/dev/null; done; wait; rm -rf "$dir"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
build/venv/bin/nats-server -a 127.0.0.1 -p "$port" -js -sd "$dir/js" 2>"$dir/nats.log" & pids+=($!)
export HWSCHED_NATS_URL=nats://127.0.0.1:$port HWSCHED_LOG=warn
until grep -q "Server is ready" "$dir/nats.log"; do sleep 0.1; done
