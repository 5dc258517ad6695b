#!/usr/bin/env python3
"""Times a LoRA training step in PyTorch diffusers + peft: the reference for
`atelier train --backend cuda` step times on the same GPU and model folder.

The step is what diffusers' `train_text_to_image_lora.py` does with
`--mixed_precision bf16`: frozen UNet, VAE and text encoder in the weight dtype,
LoRA (peft, rank/alpha, on to_q, to_k, to_v, to_out.0) and its AdamW state in f32,
the forward under autocast, VAE encode and text encode (frozen, no grad), noise and
timesteps, UNet forward and backward, `clip_grad_norm_(1.0)`, AdamW (lr 5e-4,
weight decay 1e-2, eps 1e-8). Attention is diffusers' default (torch SDPA).

    python3 tools/bench/diffusers_train_step.py --model DIR --resolution 512 \\
        --batch 1 --precision bf16 --steps 20 --warmup 3

DIR is a diffusers folder (`atelier model init worker/sd/configs/sd15 -o DIR` makes
SD1.5 with random weights). Prints one JSON object: per-step seconds, median and p90
after the warm-up steps, peak GPU memory allocated by torch, versions.
"""

import argparse
import json
import math
import statistics
import time


def percentile(values, q):
    """Nearest rank, as `atelier train` reports it."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q * len(ordered))))
    return ordered[rank - 1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--precision", choices=["bf16", "f16", "f32"], default="bf16")
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3, help="steps left out of the figures")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch
    import torch.nn.functional as F
    import diffusers
    import peft
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from peft import LoraConfig
    from transformers import CLIPTextModel, CLIPTokenizer

    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    dtype = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}[args.precision]

    tokenizer = CLIPTokenizer.from_pretrained(args.model, subfolder="tokenizer")
    text_encoder = CLIPTextModel.from_pretrained(args.model, subfolder="text_encoder")
    vae = AutoencoderKL.from_pretrained(args.model, subfolder="vae")
    unet = UNet2DConditionModel.from_pretrained(args.model, subfolder="unet")
    scheduler = DDPMScheduler.from_pretrained(args.model, subfolder="scheduler")
    for module in (text_encoder, vae, unet):
        module.requires_grad_(False)
        module.to(device, dtype=dtype)
    unet.add_adapter(
        LoraConfig(
            r=args.rank,
            lora_alpha=args.rank,
            init_lora_weights="gaussian",
            target_modules=["to_k", "to_q", "to_v", "to_out.0"],
        )
    )
    lora = [p for p in unet.parameters() if p.requires_grad]
    for p in lora:
        p.data = p.data.float()
    optimizer = torch.optim.AdamW(lora, lr=5e-4, weight_decay=1e-2, eps=1e-8)
    unet.train()

    ids = tokenizer(
        ["a painting in the style of <demo-style>"] * args.batch,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids.to(device)
    pixels = torch.rand(args.batch, 3, args.resolution, args.resolution, device=device) * 2 - 1

    times, losses = [], []
    cuda = device.type == "cuda"
    sync = (lambda: torch.cuda.synchronize(device)) if cuda else (lambda: None)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(args.steps):
        sync()
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            with torch.no_grad():
                latents = vae.encode(pixels.to(dtype)).latent_dist.sample()
                latents = latents * vae.config.scaling_factor
                context = text_encoder(ids)[0]
            noise = torch.randn_like(latents)
            t = torch.randint(0, scheduler.config.num_train_timesteps, (args.batch,), device=device)
            noisy = scheduler.add_noise(latents, noise, t)
            pred = unet(noisy, t, context).sample
        loss = F.mse_loss(pred.float(), noise.float(), reduction="mean")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(lora, 1.0)
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
        sync()
        times.append(time.perf_counter() - start)

    timed = times[args.warmup :] or times
    print(
        json.dumps(
            {
                "library": "diffusers",
                "precision": args.precision,
                "resolution": args.resolution,
                "batch": args.batch,
                "steps": args.steps,
                "warmup": args.warmup,
                "lora_parameters": sum(p.numel() for p in lora),
                "step_seconds": times,
                "step_seconds_median": statistics.median(timed),
                "step_seconds_p90": percentile(timed, 0.9),
                "peak_gpu_memory_allocated_mib": (torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None),
                "losses": losses,
                "gpu": torch.cuda.get_device_name(device) if cuda else None,
                "torch": torch.__version__,
                "diffusers": diffusers.__version__,
                "peft": peft.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
