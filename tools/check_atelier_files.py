#!/usr/bin/env python3
"""Checks that atelier's LoRA and textual-inversion files mean in diffusers what they mean in
atelier: generates one image with diffusers from fixed latents, with the files loaded, and
either writes it or compares it with `atelier generate --raw` output.

    python3 -m venv /tmp/venv-sd && \
        /tmp/venv-sd/bin/pip install torch diffusers transformers peft safetensors
    # (/tmp/venv-sd already has them on the development machines)

    # 1. latents both sides start from (the model's native size, or --size PX)
    /tmp/venv-sd/bin/python tools/check_atelier_files.py --model MODEL \\
        --latents /tmp/latents.safetensors --make-latents 42 --prompt "" --write-raw /dev/null
    # 2. atelier's image, before 8-bit quantisation
    atelier generate --model MODEL --prompt "a painting in the style of <demo-style>" \\
        --lora OUT/pytorch_lora_weights.safetensors:0.8 --ti OUT/learned_embeds.safetensors \\
        --latents /tmp/latents.safetensors --steps 20 --scheduler ddim --guidance 7.5 \\
        -o /tmp/atelier.png --raw /tmp/atelier.safetensors
    # 3. the same in diffusers, compared (exit 1 when max |diff| > --tolerance)
    /tmp/venv-sd/bin/python tools/check_atelier_files.py --model MODEL \\
        --lora OUT/pytorch_lora_weights.safetensors:0.8 --ti OUT/learned_embeds.safetensors \\
        --latents /tmp/latents.safetensors --prompt "a painting in the style of <demo-style>" \\
        --steps 20 --scheduler ddim --guidance 7.5 --compare /tmp/atelier.safetensors

What is loaded, as a diffusers user would:

- `--lora FILE[:SCALE]` (repeatable, atelier's syntax): `pipe.load_lora_weights(FILE,
  adapter_name=...)`, then `pipe.set_adapters(names, adapter_weights=scales)`, which weights
  the UNet and the text-encoder adapters alike (W + scale * alpha/rank * up @ down). atelier
  writes diffusers keys: `unet.<module path>.lora.down.weight` [r, in] and `.lora.up.weight`
  [out, r] (`pytorch_lora_weights.safetensors`); peft and kohya files load too.
- `--ti FILE` (repeatable, in order): `pipe.load_textual_inversion(FILE)`; a diffusers
  `learned_embeds.safetensors` names its token by its one key (f32 [n, hidden] or [hidden]);
  an A1111 file (key `emb_params`) is named after the file's stem, as atelier does.
- `--scheduler ddim|euler|dpmpp2m`: built from the pipeline's scheduler config as
  tools/make_sd_fixtures.py does (DPM++ 2M = DPMSolverMultistepScheduler, dpmsolver++, order 2).

The image is `pipe(..., latents=..., output_type="pt")`: f32 [3, H, W] in [0, 1], the same
tensor `atelier generate --raw` writes (key `image`). Runs on the CPU in float32.
"""

import argparse
import json
import sys
import warnings
from pathlib import Path

import torch


def parse_lora(spec):
    """`FILE` or `FILE:SCALE` (a scale is a number after the last colon), as atelier."""
    path, sep, scale = spec.rpartition(":")
    if sep:
        try:
            return path, float(scale)
        except ValueError:
            pass
    return spec, 1.0


def make_scheduler(name, config):
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler

    if name == "ddim":
        return DDIMScheduler.from_config(config)
    if name == "euler":
        return EulerDiscreteScheduler.from_config(config)
    if name == "dpmpp2m":
        return DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++", solver_order=2)
    raise ValueError(name)


def ti_token(path):
    """The token diffusers should register the file under: None (the file's own key) for a
    diffusers file, the file's stem for an A1111 `emb_params` file."""
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        keys = list(f.keys())
    if keys == ["emb_params"]:
        return Path(path).stem
    return None


def load_pipeline(args):
    import diffusers
    import transformers
    from diffusers import StableDiffusionPipeline

    warnings.filterwarnings("ignore", category=FutureWarning)
    for lib in (diffusers, transformers):
        lib.utils.logging.set_verbosity_error()
        lib.utils.logging.disable_progress_bar()
    pipe = StableDiffusionPipeline.from_pretrained(args.model, dtype=torch.float32, safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    for path in args.ti:
        token = ti_token(path)
        pipe.load_textual_inversion(path, **({"token": token} if token else {}))
    if args.lora:
        names, scales = [], []
        for i, spec in enumerate(args.lora):
            path, scale = parse_lora(spec)
            name = f"atelier{i}"
            pipe.load_lora_weights(path, adapter_name=name)
            names.append(name)
            scales.append(scale)
        pipe.set_adapters(names, adapter_weights=scales)
    pipe.scheduler = make_scheduler(args.scheduler, pipe.scheduler.config)
    return pipe


def read_tensor(path, key):
    from safetensors.torch import load_file

    tensors = load_file(path)
    if key not in tensors:
        sys.exit(f"error: {path} has no `{key}` tensor (it has: {', '.join(sorted(tensors))})")
    return tensors[key].to(torch.float32)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="diffusers model folder")
    parser.add_argument("--lora", action="append", default=[], metavar="FILE[:SCALE]", help="LoRA file (repeatable)")
    parser.add_argument("--ti", action="append", default=[], metavar="FILE", help="textual-inversion file (repeatable)")
    parser.add_argument("--latents", required=True, metavar="FILE", help="safetensors with `latents` [1,C,h,w]")
    parser.add_argument("--make-latents", type=int, metavar="SEED", help="first write --latents: torch.randn from SEED")
    parser.add_argument("--size", type=int, metavar="PX", help="image side for --make-latents (default: native)")
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--negative-prompt", default=None, help="default: the empty prompt, as atelier")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--scheduler", choices=["ddim", "euler", "dpmpp2m"], default="ddim")
    parser.add_argument("--guidance", type=float, default=7.5)
    out = parser.add_mutually_exclusive_group(required=True)
    out.add_argument("--write-raw", metavar="OUT.safetensors", help="write diffusers' image (key `image`, f32 [3,H,W])")
    out.add_argument("--compare", metavar="ATELIER.safetensors", help="atelier's `generate --raw` output to compare with")
    parser.add_argument("--tolerance", type=float, default=1e-3, help="largest max |diff| accepted (default 1e-3)")
    parser.add_argument("--json", action="store_true", help="print the comparison as JSON")
    args = parser.parse_args()

    torch.set_default_dtype(torch.float32)
    pipe = load_pipeline(args)

    if args.make_latents is not None:
        from safetensors.torch import save_file

        factor = pipe.vae_scale_factor
        side = pipe.unet.config.sample_size if args.size is None else args.size // factor
        if args.size is not None and args.size % factor:
            sys.exit(f"error: --size {args.size} is not a multiple of the VAE's factor {factor}")
        generator = torch.Generator().manual_seed(args.make_latents)
        latents = torch.randn(1, pipe.unet.config.in_channels, side, side, generator=generator)
        save_file({"latents": latents.contiguous()}, args.latents)
    latents = read_tensor(args.latents, "latents")
    if latents.ndim != 4 or latents.shape[0] != 1:
        sys.exit(f"error: `latents` must be [1, C, h, w], not {list(latents.shape)}")
    side_h, side_w = (s * pipe.vae_scale_factor for s in latents.shape[2:])

    with torch.no_grad():
        image = pipe(
            args.prompt,
            negative_prompt=args.negative_prompt,
            height=side_h,
            width=side_w,
            num_inference_steps=args.steps,
            guidance_scale=args.guidance,
            latents=latents.clone(),
            output_type="pt",
        ).images[0]
    image = image.to(torch.float32).contiguous()

    if args.write_raw:
        if args.write_raw != "/dev/null":
            from safetensors.torch import save_file

            save_file({"image": image}, args.write_raw)
            print(f"wrote {args.write_raw}: image {list(image.shape)}")
        return 0

    theirs = read_tensor(args.compare, "image")
    if theirs.shape != image.shape:
        sys.exit(f"error: atelier's image is {list(theirs.shape)}, diffusers' {list(image.shape)}")
    diff = (theirs - image).abs()
    report = {
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        # The PNGs: how many 8-bit values differ after diffusers' rounding.
        "u8_values_differing": int(((theirs * 255).round().clamp(0, 255) != (image * 255).round().clamp(0, 255)).sum()),
        "values": image.numel(),
        "tolerance": args.tolerance,
        "lora": args.lora,
        "ti": args.ti,
        "scheduler": args.scheduler,
        "steps": args.steps,
        "guidance": args.guidance,
    }
    report["ok"] = report["max_abs_diff"] <= args.tolerance
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        verdict = "ok" if report["ok"] else "TOO DIFFERENT"
        print(
            f"{verdict}: max |atelier - diffusers| = {report['max_abs_diff']:.3g} "
            f"(mean {report['mean_abs_diff']:.3g}, tolerance {args.tolerance:g}); "
            f"{report['u8_values_differing']} of {report['values']} 8-bit values differ"
        )
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
