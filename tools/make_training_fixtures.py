#!/usr/bin/env python3
"""Writes the training-step golden fixtures (LoRA, DreamBooth-LoRA, textual inversion).

    python3 -m venv /tmp/venv-sd && \
        /tmp/venv-sd/bin/pip install torch torchvision diffusers transformers open-clip-torch \
            safetensors peft
    /tmp/venv-sd/bin/python tools/make_sd_fixtures.py          # once: the tiny-sd pipeline
    /tmp/venv-sd/bin/python tools/make_training_fixtures.py

Made with torch 2.15, diffusers 0.42.1, transformers 5.24.0, peft 0.21.2 (recorded in each
JSON). Needs no network. Runs on the CPU in float32 with fixed seeds, one thread and
deterministic algorithms: two runs write byte-identical files. Reads (never writes)
`worker/sd/tests/fixtures/tiny-sd/` and two pictures each from `trainsets/demo/images/`.

Output, `worker/sd/tests/fixtures/training/` (replaced on each run):

    lora.safetensors + lora.json              UNet LoRA, as train_text_to_image_lora.py
    dreambooth.safetensors + dreambooth.json  UNet LoRA with prior preservation, as
                                              train_dreambooth_lora.py
    ti.safetensors + ti.json                  one new token `<monet-style>`, as
                                              textual_inversion.py

Three optimizer steps on the same batch of two, each done the way diffusers' example
scripts do it, except that every random draw is made here, up front, with a seeded
generator and stored, so that a reimplementation can replay it:

    for k in 1..=3:
        dist    = vae.encode(pixel_values).latent_dist       # mean, logvar (clamped [-30, 20])
        latents = (dist.mean + exp(0.5 * dist.logvar) * step{k}.vae_noise) * scaling_factor
        noisy   = DDPMScheduler.add_noise(latents, step{k}.noise, step{k}.timesteps)
        ehs     = text_encoder(input_ids)[0]                  # no attention mask
        pred    = unet(noisy, step{k}.timesteps, ehs).sample
        loss    = mse(pred, noise)                            # DreamBooth: see the JSON
        loss.backward()
        total_norm = clip_grad_norm_(trainable, 1.0)          # textual inversion: no clipping
        AdamW.step(); zero_grad()                             # TI: then restore the other rows

`vae_noise` is exactly what `latent_dist.sample(generator)` draws (checked), `noise` what
`torch.randn_like(latents)` and `timesteps` what `torch.randint(0, 1000, (B,))` would. The
pixels are stored as u8 [B, 128, 128, 3] (f32 pixel values would triple the size); the JSON
gives the script's exact conversion to f32 and the script checks it bit for bit.

See worker/sd/tests/fixtures/README.md and each JSON's `tensors` for the names.
"""

import json
import shutil
import warnings
from pathlib import Path

import diffusers
import numpy as np
import peft
import PIL
import safetensors
import torch
import torch.nn.functional as F
import transformers
from diffusers import DDPMScheduler, StableDiffusionPipeline
from diffusers.utils.torch_utils import randn_tensor
from peft import LoraConfig
from PIL import Image
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "worker/sd/tests/fixtures"
PIPELINE = FIXTURES / "tiny-sd"
DEMO = ROOT / "trainsets/demo/images"
OUT = FIXTURES / "training"

STEPS = 3
RESOLUTION = 128
BETAS = (0.9, 0.999)
EPS = 1e-8
WEIGHT_DECAY = 1e-2
MAX_GRAD_NORM = 1.0

LORA_RANK = 2
LORA_ALPHA = 4
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
LORA_B_STD = 0.02  # peft's "gaussian" init leaves lora_B zero: step-1 grads of lora_A would be 0
PRIOR_LOSS_WEIGHT = 1.0

PLACEHOLDER = "<monet-style>"
INITIALIZER = "style"

METHODS = {
    "lora": {
        "seed": 1001,
        "script": "examples/text_to_image/train_text_to_image_lora.py (peft version)",
        "lr": 1e-3,
        "images": ["dots-0.png", "stripes-0.png"],
        "prompts": ["a painting in the style of monet", "a painting in the style of monet"],
        "normalise": "torchvision",
    },
    "dreambooth": {
        "seed": 1002,
        "script": "examples/dreambooth/train_dreambooth_lora.py --with_prior_preservation",
        "lr": 1e-3,
        "images": ["waves-0.png", "dots-1.png"],  # [instance, class]
        "prompts": ["a sks character", "an anime character"],
        "normalise": "torchvision",
    },
    "ti": {
        "seed": 1003,
        "script": "examples/textual_inversion/textual_inversion.py",
        "lr": 5e-3,
        "images": ["stripes-1.png", "waves-1.png"],
        "prompts": [
            f"a painting in the style of {PLACEHOLDER}",
            f"a rendering in the style of {PLACEHOLDER}",
        ],
        "normalise": "numpy",
    },
}

NORMALISE = {
    "torchvision": (
        "transforms.ToTensor() + transforms.Normalize([0.5], [0.5]) (train_text_to_image_lora.py, "
        "train_dreambooth_lora.py): pixel_values[b, c, y, x] = (f32(pixels[b, y, x, c]) / 255.0 "
        "- 0.5) / 0.5, every operation in f32"
    ),
    "numpy": (
        "textual_inversion.py: (np.array(image) / 127.5 - 1.0).astype(np.float32): "
        "pixel_values[b, c, y, x] = f32(f64(pixels[b, y, x, c]) / 127.5 - 1.0), computed in f64, "
        "rounded once (differs from the torchvision formula by 1 ulp for half the u8 values)"
    ),
}

ADAMW = (
    "torch.optim.AdamW, single-tensor CPU path, step t = 1, 2, 3: p *= 1 - lr * weight_decay; "
    "m = b1 * m + (1 - b1) * g; v = b2 * v + (1 - b2) * g * g; "
    "p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps); m, v start at 0"
)


def setup_torch():
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float32)
    torch.use_deterministic_algorithms(True)
    warnings.filterwarnings("ignore")
    for lib in (diffusers, transformers):
        lib.utils.logging.set_verbosity_error()
        lib.utils.logging.disable_progress_bar()


def write_json(path, obj):
    text = json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False)
    path.write_text(text + "\n", encoding="utf-8")


def load_pipeline():
    pipe = StableDiffusionPipeline.from_pretrained(PIPELINE, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tokenize(tokenizer, prompts):
    return tokenizer(
        prompts,
        padding="max_length",
        truncation=True,
        max_length=tokenizer.model_max_length,
        return_tensors="pt",
    ).input_ids.to(torch.int64)


def load_pixels(names):
    """u8 [B, R, R, 3]: RGB, resized so the short side is R (PIL bicubic), centre-cropped."""
    out = []
    for name in names:
        image = Image.open(DEMO / name).convert("RGB")
        w, h = image.size
        scale = RESOLUTION / min(w, h)
        image = image.resize((round(w * scale), round(h * scale)), resample=Image.Resampling.BICUBIC)
        w, h = image.size
        left, top = (w - RESOLUTION) // 2, (h - RESOLUTION) // 2
        image = image.crop((left, top, left + RESOLUTION, top + RESOLUTION))
        out.append(np.array(image, dtype=np.uint8))
    return torch.from_numpy(np.stack(out))


def pixel_values(pixels, convention):
    """The scripts' own conversions, checked against the formula the JSON gives."""
    chw = pixels.permute(0, 3, 1, 2)
    if convention == "torchvision":
        import torchvision.transforms as T

        tf = T.Compose([T.ToTensor(), T.Normalize([0.5], [0.5])])
        values = torch.stack([tf(Image.fromarray(p.numpy())) for p in pixels])
        formula = (chw.to(torch.float32) / 255.0 - 0.5) / 0.5
    else:
        values = torch.stack(
            [torch.from_numpy((p.numpy() / 127.5 - 1.0).astype(np.float32)).permute(2, 0, 1) for p in pixels]
        )
        formula = (chw.to(torch.float64) / 127.5 - 1.0).to(torch.float32)
    assert torch.equal(values, formula), convention
    return values.contiguous()


def draw_randomness(generator, batch, latent_shape):
    """Per step, in the order the scripts draw: the VAE sample, the noise, the timesteps."""
    draws = {}
    for k in range(1, STEPS + 1):
        draws[f"step{k}.vae_noise"] = randn_tensor((batch, *latent_shape), generator=generator)
        draws[f"step{k}.noise"] = torch.randn((batch, *latent_shape), generator=generator)
        draws[f"step{k}.timesteps"] = torch.randint(0, 1000, (batch,), generator=generator, dtype=torch.int64)
    return draws


def peft_key(name):
    """`...to_q.lora_A.default.weight` -> `...to_q.lora_A.weight` (get_peft_model_state_dict)."""
    assert ".default." in name, name
    return name.replace(".default.", ".")


def as_floats(values):
    return [float(v) for v in values]


def train(method, spec):
    """Runs 3 steps of one method; returns (tensors, info)."""
    pipe = load_pipeline()
    vae, unet, text_encoder, tokenizer = pipe.vae, pipe.unet, pipe.text_encoder, pipe.tokenizer
    noise_scheduler = DDPMScheduler.from_pretrained(PIPELINE, subfolder="scheduler")
    scaling_factor = vae.config.scaling_factor
    vae.requires_grad_(False)
    unet.requires_grad_(False)
    text_encoder.requires_grad_(False)
    generator = torch.Generator().manual_seed(spec["seed"])
    torch.manual_seed(spec["seed"])  # peft draws lora_A from the global generator

    info = {"method": method}
    tensors = {}
    named = {}  # fixture key -> parameter
    if method in ("lora", "dreambooth"):
        config = LoraConfig(
            r=LORA_RANK, lora_alpha=LORA_ALPHA, init_lora_weights="gaussian", target_modules=LORA_TARGETS
        )
        unet.add_adapter(config)
        with torch.no_grad():
            for name, p in unet.named_parameters():
                if p.requires_grad and ".lora_B." in name:
                    p.copy_(torch.randn(p.shape, generator=generator) * LORA_B_STD)
        trainable = [p for p in unet.parameters() if p.requires_grad]
        named = {peft_key(n): p for n, p in unet.named_parameters() if p.requires_grad}
        assert len(named) == len(trainable) == 256, len(named)
        a_std = torch.cat([p.flatten() for k, p in named.items() if ".lora_A." in k]).std().item()
        info["lora"] = {
            "rank": LORA_RANK,
            "alpha": LORA_ALPHA,
            "scaling": LORA_ALPHA / LORA_RANK,
            "target_modules": LORA_TARGETS,
            "adapted_layers": len(named) // 2,
            "forward": "y = base(x) + lora_B(lora_A(x)) * (alpha / rank); lora_dropout 0 (Identity)",
            "init": (
                f"LoraConfig(r={LORA_RANK}, lora_alpha={LORA_ALPHA}, init_lora_weights='gaussian', "
                f"target_modules={LORA_TARGETS}) via unet.add_adapter (adapter 'default'): lora_A ~ "
                f"N(0, (1/r)^2) from torch.manual_seed({spec['seed']}) (measured std {a_std:.4f}); "
                f"lora_B (zero from peft) then overwritten with N(0, {LORA_B_STD}^2). The values used "
                "are `init.*`"
            ),
            "key_format": "<diffusers module path>.lora_A.weight [r, in] / .lora_B.weight [out, r]",
        }
        unet.train()
    else:
        num_added = tokenizer.add_tokens(PLACEHOLDER)
        assert num_added == 1
        token_ids = tokenizer.encode(INITIALIZER, add_special_tokens=False)
        assert len(token_ids) == 1, token_ids
        initializer_id = token_ids[0]
        placeholder_id = tokenizer.convert_tokens_to_ids(PLACEHOLDER)
        text_encoder.resize_token_embeddings(len(tokenizer))
        token_embeds = text_encoder.get_input_embeddings().weight.data
        with torch.no_grad():
            token_embeds[placeholder_id] = token_embeds[initializer_id].clone()
        embedding = text_encoder.get_input_embeddings().weight
        embedding.requires_grad_(True)
        trainable = list(text_encoder.get_input_embeddings().parameters())
        assert len(trainable) == 1 and trainable[0] is embedding
        assert [n for n, p in text_encoder.named_parameters() if p.requires_grad] == [
            "embeddings.token_embedding.weight"
        ]
        orig_embeds_params = embedding.data.clone()
        index_no_updates = torch.ones((len(tokenizer),), dtype=torch.bool)
        index_no_updates[placeholder_id : placeholder_id + 1] = False
        info["textual_inversion"] = {
            "placeholder_token": PLACEHOLDER,
            "placeholder_token_id": placeholder_id,
            "initializer_token": INITIALIZER,
            "initializer_token_id": initializer_id,
            "vocab_size_after_resize": len(tokenizer),
            "num_vectors": 1,
            "init": (
                "tokenizer.add_tokens(placeholder); text_encoder.resize_token_embeddings(len(tokenizer)); "
                "row[placeholder_id] = row[initializer_id] (`init.token_embedding_row`)"
            ),
            "trainable": (
                "the whole input embedding weight [vocab_size_after_resize, hidden] is given to AdamW "
                "(weight decay shrinks every row); after each optimizer step every row except "
                "placeholder_token_id is restored from the copy taken before training "
                "(`index_no_updates`), so only that row changes; AdamW is element-wise, so "
                "training only that row with the same AdamW gives the same row"
            ),
            "other_rows_restored": True,
        }
        text_encoder.train()

    input_ids = tokenize(tokenizer, spec["prompts"])
    pixels = load_pixels(spec["images"])
    values = pixel_values(pixels, spec["normalise"])
    batch = values.shape[0]

    optimizer = torch.optim.AdamW(trainable, lr=spec["lr"], betas=BETAS, weight_decay=WEIGHT_DECAY, eps=EPS)

    with torch.no_grad():
        dist = vae.encode(values).latent_dist
        mean, logvar = dist.mean.clone(), dist.logvar.clone()
    draws = draw_randomness(generator, batch, tuple(mean.shape[1:]))
    # The recorded VAE noise is exactly what latent_dist.sample(generator) draws.
    check = torch.Generator().manual_seed(7)
    sample = dist.sample(generator=check)
    assert torch.equal(sample, mean + torch.exp(0.5 * logvar) * randn_tensor(mean.shape, generator=torch.Generator().manual_seed(7)))

    if method == "ti":
        tensors["init.token_embedding_row"] = embedding.detach()[placeholder_id : placeholder_id + 1].clone()
    else:
        tensors.update({f"init.{k}": p.detach().clone() for k, p in named.items()})

    losses, norms, clip_coefs, instance_losses, prior_losses, row_norms = [], [], [], [], [], []
    for k in range(1, STEPS + 1):
        vae_noise, noise, timesteps = (draws[f"step{k}.{n}"] for n in ("vae_noise", "noise", "timesteps"))
        with torch.no_grad():
            dist = vae.encode(values).latent_dist
            latents = (dist.mean + dist.std * vae_noise) * scaling_factor
        noisy_latents = noise_scheduler.add_noise(latents, noise, timesteps)
        encoder_hidden_states = text_encoder(input_ids)[0]
        model_pred = unet(noisy_latents, timesteps, encoder_hidden_states).sample
        target = noise
        if method == "dreambooth":
            pred, pred_prior = torch.chunk(model_pred, 2, dim=0)
            tgt, tgt_prior = torch.chunk(target, 2, dim=0)
            loss = F.mse_loss(pred.float(), tgt.float(), reduction="mean")
            prior_loss = F.mse_loss(pred_prior.float(), tgt_prior.float(), reduction="mean")
            instance_losses.append(loss.item())
            prior_losses.append(prior_loss.item())
            loss = loss + PRIOR_LOSS_WEIGHT * prior_loss
        else:
            loss = F.mse_loss(model_pred.float(), target.float(), reduction="mean")
        losses.append(loss.item())
        loss.backward()

        if method == "ti":
            grad = embedding.grad
            total_norm = torch.nn.utils.get_total_norm([grad], 2.0)
            row_norms.append(grad[placeholder_id].norm().item())
            if k == 1:
                tensors["grad1.token_embedding_row"] = grad[placeholder_id : placeholder_id + 1].clone()
            clip_coefs.append(None)
        else:
            if k == 1:
                tensors.update({f"grad1.{key}": p.grad.clone() for key, p in named.items()})
            total_norm = torch.nn.utils.clip_grad_norm_(trainable, MAX_GRAD_NORM)
            clip_coefs.append(min(1.0, (torch.tensor(MAX_GRAD_NORM) / (total_norm + 1e-6)).item()))
        norms.append(total_norm.item())
        optimizer.step()
        optimizer.zero_grad()

        if method == "ti":
            with torch.no_grad():
                text_encoder.get_input_embeddings().weight[index_no_updates] = orig_embeds_params[index_no_updates]

        if k == 1:
            tensors["step1.latents"] = latents.detach().clone()
            tensors["step1.noisy_latents"] = noisy_latents.detach().clone()
            tensors["step1.encoder_hidden_states"] = encoder_hidden_states.detach().clone()
            tensors["step1.model_pred"] = model_pred.detach().clone()

    if method == "ti":
        final = embedding.detach()
        assert torch.equal(final[index_no_updates], orig_embeds_params[index_no_updates])
        assert not torch.equal(final[placeholder_id], orig_embeds_params[placeholder_id])
        tensors["final.token_embedding_row"] = final[placeholder_id : placeholder_id + 1].clone()
    else:
        tensors.update({f"final.{k}": p.detach().clone() for k, p in named.items()})
        assert all(not torch.equal(tensors[f"init.{k}"], tensors[f"final.{k}"]) for k in named)
        assert all(tensors[f"grad1.{k}"].abs().max() > 0 for k in named)

    tensors.update(draws)
    tensors.update(
        {"pixels": pixels, "input_ids": input_ids, "vae_mean": mean, "vae_logvar": logvar}
    )
    tensors = {k: v.contiguous() for k, v in sorted(tensors.items())}

    n_trainable = sum(p.numel() for p in trainable)
    info.update(
        {
            "script": f"diffusers {spec['script']}",
            "pipeline": "tiny-sd",
            "steps": STEPS,
            "batch_size": batch,
            "same_batch_every_step": True,
            "prompts": spec["prompts"],
            "images": [f"trainsets/demo/images/{n}" for n in spec["images"]],
            "image_preprocessing": (
                f"PIL RGB, resize short side to {RESOLUTION} (Image.BICUBIC), centre crop, no flip; "
                "stored as `pixels` u8 [B, H, W, 3]"
            ),
            "pixel_values": NORMALISE[spec["normalise"]],
            "tokenizer": "padding='max_length', truncation=True, max_length=77 (`input_ids`)",
            "text_encoder": "text_encoder(input_ids)[0], no attention mask (last_hidden_state)",
            "vae": (
                "latents = (mean + exp(0.5 * logvar) * step{k}.vae_noise) * scaling_factor, "
                "mean/logvar = vae.encode(pixel_values).latent_dist (logvar clamped to [-30, 20]; "
                "the same every step: `vae_mean`, `vae_logvar`)"
            ),
            "scaling_factor": scaling_factor,
            "noise_scheduler": {
                "class": "DDPMScheduler",
                "from": "DDPMScheduler.from_pretrained(tiny-sd, subfolder='scheduler') (the SD1.5 PNDM config)",
                "config": {k: v for k, v in dict(noise_scheduler.config).items() if not k.startswith("_")},
                "add_noise": (
                    "alphas_cumprod = cumprod(1 - linspace(sqrt(0.00085), sqrt(0.012), 1000, f32)^2); "
                    "noisy = sqrt(ac[t]) * latents + sqrt(1 - ac[t]) * noise"
                ),
            },
            "loss": (
                "mse(pred[0:1], noise[0:1]) + prior_loss_weight * mse(pred[1:2], noise[1:2]) "
                "(torch.chunk into [instance, class] halves)"
                if method == "dreambooth"
                else "F.mse_loss(model_pred.float(), noise.float(), reduction='mean')"
            ),
            "optimizer": {
                "class": "torch.optim.AdamW",
                "lr": spec["lr"],
                "lr_scheduler": "constant, no warmup",
                "betas": list(BETAS),
                "eps": EPS,
                "weight_decay": WEIGHT_DECAY,
                "amsgrad": False,
                "update": ADAMW,
            },
            "clip_grad_norm": None if method == "ti" else MAX_GRAD_NORM,
            "clipping": (
                "none (textual_inversion.py does not clip); total_norm is only recorded"
                if method == "ti"
                else "torch.nn.utils.clip_grad_norm_(trainable, 1.0) after backward: total_norm = "
                "L2 norm of all grads; grads *= min(1, 1.0 / (total_norm + 1e-6)) (`clip_coef`)"
            ),
            "trainable": {
                "tensors": len(trainable),
                "parameters": n_trainable,
                "effective_parameters": (
                    embedding.shape[1] if method == "ti" else n_trainable
                ),
            },
            "frozen": (
                "VAE, UNet, text encoder except the input embedding"
                if method == "ti"
                else "VAE, text encoder, UNet base weights (requires_grad_(False))"
            ),
            "train_mode": "unet.train()" if method != "ti" else "text_encoder.train()",
            "seeds": {
                "draws": f"torch.Generator().manual_seed({spec['seed']}): "
                + ("lora_B values (unet.named_parameters order), then " if method != "ti" else "")
                + "per step vae_noise, noise, timesteps",
                "global": spec["seed"],
            },
            "per_step": {
                "loss": as_floats(losses),
                "total_norm": as_floats(norms),
                "clip_coef": clip_coefs,
                "timesteps": {f"step{k}": draws[f"step{k}.timesteps"].tolist() for k in range(1, STEPS + 1)},
            },
            "tensors": {
                k: {"shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch.")}
                for k, v in tensors.items()
                if not k.startswith(("init.", "grad1.", "final.")) or method == "ti"
            },
            "versions": {
                "torch": torch.__version__,
                "diffusers": diffusers.__version__,
                "transformers": transformers.__version__,
                "peft": peft.__version__,
                "safetensors": safetensors.__version__,
                "pillow": PIL.__version__,
            },
        }
    )
    if method == "dreambooth":
        info["prior_preservation"] = {
            "prior_loss_weight": PRIOR_LOSS_WEIGHT,
            "batch": "[instance, class]: pixels/input_ids row 0 = instance, row 1 = class",
            "instance_prompt": spec["prompts"][0],
            "class_prompt": spec["prompts"][1],
            "class_image": "a demo picture standing in for a generated class image",
        }
        info["per_step"]["instance_loss"] = as_floats(instance_losses)
        info["per_step"]["prior_loss"] = as_floats(prior_losses)
    if method == "ti":
        info["per_step"]["total_norm_is"] = "L2 norm of the whole embedding gradient (all rows), not clipped"
        info["per_step"]["row_grad_norm"] = as_floats(row_norms)
        info["tensor_notes"] = {
            "init.token_embedding_row": "[1, hidden]: the new row before training (= initializer row)",
            "grad1.token_embedding_row": "[1, hidden]: its gradient at step 1",
            "final.token_embedding_row": "[1, hidden]: the row after step 3",
        }
    else:
        info["trainable_keys"] = {k: list(p.shape) for k, p in sorted(named.items())}
        info["tensor_notes"] = {
            "init.<key>": "LoRA parameters before step 1 (<key> in trainable_keys, f32)",
            "grad1.<key>": "their gradients at step 1, before clipping",
            "final.<key>": "after step 3",
        }
    info["tensor_notes"].update(
        {
            "pixels": "u8 [B, H, W, 3], see pixel_values",
            "input_ids": "int64 [B, 77]",
            "vae_mean, vae_logvar": "latent_dist.mean / .logvar of the batch (no grad)",
            "step{k}.vae_noise / .noise": "f32 [B, 4, 16, 16] randn",
            "step{k}.timesteps": "int64 [B] in [0, 1000)",
            "step1.latents / .noisy_latents / .encoder_hidden_states / .model_pred": "step-1 intermediates",
        }
    )
    return tensors, info


def main():
    setup_torch()
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    summary = {}
    for method, spec in METHODS.items():
        tensors, info = train(method, spec)
        path = OUT / f"{method}.safetensors"
        save_file(tensors, path)
        assert all(torch.equal(v, tensors[k]) for k, v in load_file(path).items())
        write_json(OUT / f"{method}.json", info)
        summary[method] = info["per_step"]

    total = 0
    for f in sorted(OUT.rglob("*")):
        if f.is_file():
            total += f.stat().st_size
            print(f"  {f.stat().st_size:>8}  {f.relative_to(ROOT)}")
    print(f"total {total / 1e3:.1f} kB")
    for method, steps in summary.items():
        print(method, json.dumps({k: v for k, v in steps.items() if k != "timesteps"}))


if __name__ == "__main__":
    main()
