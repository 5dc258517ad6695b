#!/usr/bin/env bash
# The CUDA checks, for a GPU machine that has no Rust toolchain (binaries built
# elsewhere, see tools/gpu/README.md): 20 LoRA training steps on the full SD1.5
# architecture (random weights) at 512 px in bf16 with `atelier train`, the same
# steps in PyTorch diffusers + peft, then the golden tests on the CUDA backend.
# GPU memory is sampled every 0.2 s; the peak of each phase is reported.
#
#   tools/gpu/run_cuda_checks.sh BIN_DIR OUT_DIR
#
# BIN_DIR holds `atelier` and the test executables named after their test files
# (models, pipeline, adapters, training, loading, schedulers), built with
# `--features test-cuda`. Run from the repository root.
set -u
BIN=$(realpath "$1")
OUT=$(realpath -m "$2")
STEPS=${STEPS:-20}
mkdir -p "$OUT"

# The test executables find their fixtures through the checkout path they were built in.
BUILT_IN=$(cat "$BIN/checkout-path" 2>/dev/null || true)
if [ -n "$BUILT_IN" ] && [ ! -e "$BUILT_IN" ]; then
  mkdir -p "$(dirname "$BUILT_IN")" && ln -s "$PWD" "$BUILT_IN"
fi

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
(while true; do
  echo "$(date +%s.%N) $(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)"
  sleep 0.2
done) >"$OUT/memory.log" 2>/dev/null &
SAMPLER=$!
phase() { echo "$(date +%s.%N) $1" >>"$OUT/phases.log"; echo "== $1 ($(date +%T))"; }

phase model-init
/usr/bin/time -f "model init: %e s, %M KiB peak RSS" \
  "$BIN/atelier" model init worker/sd/configs/sd15 -o /tmp/sd15 --json >"$OUT/model-init.json" 2>&1 || cat "$OUT/model-init.json"

phase atelier-bf16
timeout 240 "$BIN/atelier" train --method lora --model /tmp/sd15 --trainset trainsets/demo \
  --token "<demo-style>" --steps "$STEPS" --resolution 512 --batch 1 --rank 4 \
  --backend cuda --precision bf16 -o /tmp/run-bf16 --json >"$OUT/atelier-bf16.json" 2>"$OUT/atelier-bf16.err"
echo "atelier bf16: exit $?"; tail -5 "$OUT/atelier-bf16.err"

phase diffusers-bf16
PYTHONUNBUFFERED=1 timeout 150 python3 tools/bench/diffusers_train_step.py --model /tmp/sd15 \
  --steps "$STEPS" --resolution 512 --precision bf16 >"$OUT/diffusers-bf16.json" 2>"$OUT/diffusers-bf16.err"
echo "diffusers bf16: exit $?"; tail -3 "$OUT/diffusers-bf16.err"

phase golden-tests
for t in models loading schedulers pipeline adapters training; do
  start=$(date +%s)
  timeout "${TEST_TIMEOUT:-120}" "$BIN/$t" --test-threads 1 >"$OUT/test-$t.log" 2>&1
  rc=$?
  echo "$t: exit $rc in $(($(date +%s) - start)) s; $(grep -E '^test result' "$OUT/test-$t.log" | tail -1)"
  grep -E 'max abs error|relative error|relative [0-9]|FAILED|panicked' "$OUT/test-$t.log" | head -40
done

phase done
kill $SAMPLER
python3 - "$OUT" <<'EOF'
import json, sys
out = sys.argv[1]
phases = [l.split(maxsplit=1) for l in open(f"{out}/phases.log")]
mem = []
for line in open(f"{out}/memory.log"):
    parts = line.split()
    if len(parts) == 2 and parts[1].isdigit():
        mem.append((float(parts[0]), int(parts[1])))
for (t0, name), (t1, _) in zip(phases, phases[1:]):
    used = [m for t, m in mem if float(t0) <= t <= float(t1)]
    print(f"{name.strip()}: {float(t1) - float(t0):.0f} s, peak GPU memory used {max(used) if used else 'n/a'} MiB")
for name in ("atelier-bf16", "diffusers-bf16"):
    try:
        r = json.load(open(f"{out}/{name}.json"))
    except Exception as e:
        print(f"{name}: no result ({e})")
        continue
    print(f"{name}: median {r.get('step_seconds_median')} s/step, p90 {r.get('step_seconds_p90')} s/step, "
          f"losses {[round(x, 4) for x in (r.get('losses') or [])][:3]}..., "
          f"torch peak allocated {r.get('peak_gpu_memory_allocated_mib', 'n/a')} MiB")
EOF
