#!/usr/bin/env bash
# Builds, on a machine with the Rust toolchain, what tools/gpu/run_cuda_checks.sh
# runs on a GPU machine without one: the release `atelier` binary and the atelier-sd
# test executables with `--features test-cuda`, stripped, into BIN_DIR.
#
#   tools/gpu/build_bundle.sh BIN_DIR
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=$(realpath -m "$1")
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/atelier-target}"
mkdir -p "$BIN"
cargo build --release --locked -p atelier-cli --bin atelier
cp "$CARGO_TARGET_DIR/release/atelier" "$BIN/atelier"
# One line of JSON per artifact; the test executables are the `test` targets.
cargo test --release --locked -p atelier-sd --features test-cuda --no-run --message-format json 2>/dev/null \
  | python3 -c '
import json, shutil, sys
bin_dir = sys.argv[1]
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["kind"] == ["test"] and m.get("executable"):
        name = m["target"]["name"]
        shutil.copy(m["executable"], bin_dir + "/" + name)
        print(name)
' "$BIN"
find "$BIN" -type f -perm -u+x -exec strip {} +
# The tests find their fixtures through the checkout path compiled into them.
pwd >"$BIN/checkout-path"
du -sh "$BIN"/*
