#!/usr/bin/env bash
# `make fuzz`: runs every fuzz target in fuzz/ (cargo fuzz, libFuzzer with
# AddressSanitizer) for FUZZ_SECONDS each (default 60) on its committed corpus.
# Installs the nightly toolchain and cargo-fuzz when missing. Exits non-zero when
# a target finds a crash (the input is kept under fuzz/artifacts/<target>/).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root/fuzz"
seconds=${FUZZ_SECONDS:-60}
rustup run nightly rustc --version >/dev/null 2>&1 || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
cargo +nightly fuzz build -O
failed=0
for target in $(cargo +nightly fuzz list); do
  mkdir -p "corpus/$target"
  log="$root/build/fuzz-$target.log"
  mkdir -p "$root/build"
  if cargo +nightly fuzz run -O "$target" "corpus/$target" -- -max_total_time="$seconds" -max_len=8192 >"$log" 2>&1; then
    echo "fuzz $target: $(grep -Eo 'Done [0-9]+ runs in [0-9]+ second' "$log" | tail -1), no crash"
  else
    echo "fuzz $target: CRASH (input under fuzz/artifacts/$target/, log $log)"
    grep -E "panicked|SUMMARY" "$log" | head -5 || true
    failed=1
  fi
done
exit $failed
