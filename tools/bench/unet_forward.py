#!/usr/bin/env python3
"""Times diffusers' UNet2DConditionModel forward on the CPU: PyTorch's side of
`atelier bench unet`.

`atelier bench unet` writes a diffusers UNet folder (config.json +
diffusion_pytorch_model.safetensors, random weights) and an inputs file, times its
own forward, then runs this script on the same folder and inputs and compares the
timings and the outputs. The atelier binary carries a copy of this file (it is
compiled in), so the script needs no checkout at run time.

Set up a venv (CPU wheels of torch are enough):

    python3 -m venv /tmp/venv-sd
    /tmp/venv-sd/bin/pip install torch --index-url https://download.pytorch.org/whl/cpu
    /tmp/venv-sd/bin/pip install diffusers transformers safetensors

then point atelier at it:

    ATELIER_PYTHON=/tmp/venv-sd/bin/python atelier bench unet

or run it standalone on any diffusers UNet folder and an inputs file holding
`sample` [b, 4, h, w], `timesteps` [b] and `encoder_hidden_states` [b, 77, cross]
(all float32):

    /tmp/venv-sd/bin/python tools/bench/unet_forward.py \
        --unet DIR --inputs inputs.safetensors --iters 5 --warmup 1 --threads 2 \
        --out out.safetensors

It prints one JSON object on stdout: the per-iteration times, their median and p90
in milliseconds, the threads torch used, and the library versions. `--out` writes
the last forward's noise prediction as the tensor `out`.

The model runs in float32 under torch.no_grad(), in eval mode, with diffusers'
default attention processor (torch's scaled_dot_product_attention).
"""

import argparse
import json
import statistics
import sys
import time


def percentile(sorted_values, p):
    """The nearest-rank percentile, the same rule the atelier side uses."""
    if not sorted_values:
        return float("nan")
    i = round((len(sorted_values) - 1) * p)
    return sorted_values[i]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--unet", required=True, help="diffusers UNet folder")
    parser.add_argument("--inputs", required=True, help="safetensors: sample, timesteps, encoder_hidden_states")
    parser.add_argument("--iters", type=int, default=5, help="timed forwards")
    parser.add_argument("--warmup", type=int, default=1, help="untimed forwards first")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    parser.add_argument("--out", help="write the noise prediction here (safetensors, tensor `out`)")
    args = parser.parse_args()

    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:
            pass  # only settable before the first parallel work

    import diffusers
    from diffusers import UNet2DConditionModel
    from safetensors.torch import load_file, save_file

    unet = UNet2DConditionModel.from_pretrained(args.unet, torch_dtype=torch.float32)
    unet.eval()
    inputs = load_file(args.inputs)
    sample = inputs["sample"].to(torch.float32)
    timesteps = inputs["timesteps"].to(torch.float32)
    context = inputs["encoder_hidden_states"].to(torch.float32)

    times_ms = []
    out = None
    with torch.no_grad():
        for i in range(args.warmup + max(args.iters, 1)):
            t0 = time.perf_counter()
            out = unet(sample, timesteps, encoder_hidden_states=context).sample
            elapsed = (time.perf_counter() - t0) * 1000.0
            if i >= args.warmup:
                times_ms.append(elapsed)

    if args.out:
        save_file({"out": out.contiguous()}, args.out)

    ordered = sorted(times_ms)
    json.dump(
        {
            "times_ms": times_ms,
            "median_ms": statistics.median(ordered),
            "p90_ms": percentile(ordered, 0.9),
            "threads": torch.get_num_threads(),
            "interop_threads": torch.get_num_interop_threads(),
            "params": sum(p.numel() for p in unet.parameters()),
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
        },
        sys.stdout,
    )
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
