#!/usr/bin/env python3
"""Writes the golden fixtures of `worker/metrics` (LPIPS and CLIP score).

    /tmp/venv-sd/bin/pip install torch torchvision transformers safetensors lpips torchmetrics
    /tmp/venv-sd/bin/python tools/make_eval_fixtures.py

Made with torch 2.15, torchvision 0.29, lpips 0.1.4, transformers 5.24.0, torchmetrics
1.9.0 (recorded in each reference JSON). Needs no network: the LPIPS backbones get
weights from a formula (below), the linear layers are the ones inside the lpips package,
the CLIP model is random. CPU, float32, fixed seeds, one thread: a rerun writes
byte-identical files.

Output (replaced on each run, all committed; see worker/metrics/tests/fixtures/README.md):

    worker/metrics/tests/fixtures/lpips/       image pairs (PNG), the package's linear
                                               weights, reference.json (distances)
    worker/metrics/tests/fixtures/tiny-clip/   random CLIPModel (save_pretrained), the
                                               CLIP tokenizer (symlinked from atelier-sd's
                                               fixtures), preprocessor_config.json
    worker/metrics/tests/fixtures/clip/        images (PNG), reference.safetensors +
                                               reference.json, preprocessor_alt.json

Backbone weights formula (`atelier_metrics::testing` computes the same in Rust): the
backbone tensors are numbered t = 0, 1, ... in state_dict order (conv weight, then its
bias); element i (row-major) of tensor t is

    h = splitmix64((t << 32) | i)          # the finaliser of SplitMix64, on u64
    u = (h >> 40) / 2**24                  # in [0, 1), exact in f64
    w = f32((2u - 1) * bound)              # f64 arithmetic, one rounding to f32
    bound = sqrt(6 / fan_in) (weights), 1 / sqrt(fan_in) (biases), fan_in = in * k * k
"""

import importlib.util
import json
import os
import shutil
import sys
import warnings
from pathlib import Path

import lpips
import numpy as np
import PIL
import safetensors
import torch
import torchmetrics
import torchvision
import transformers
from PIL import Image
from safetensors.torch import save_file
from torchmetrics.functional.multimodal.clip_score import _clip_score_update
from transformers import (
    CLIPConfig,
    CLIPImageProcessor,
    CLIPImageProcessorPil,
    CLIPModel,
    CLIPProcessor,
    CLIPTextConfig,
    CLIPTokenizer,
    CLIPVisionConfig,
)

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "worker/metrics/tests/fixtures"
LPIPS_DIR = FIXTURES / "lpips"
CLIP_DIR = FIXTURES / "clip"
TINY_CLIP = FIXTURES / "tiny-clip"
SD_TOKENIZER = ROOT / "worker/sd/tests/fixtures/tiny-sd/tokenizer"

spec = importlib.util.spec_from_file_location("convert_lpips_weights", ROOT / "tools/convert_lpips_weights.py")
convert_lpips = importlib.util.module_from_spec(spec)
spec.loader.exec_module(convert_lpips)

MASK64 = (1 << 64) - 1


def versions():
    return {
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "lpips": "0.1.4",
        "transformers": transformers.__version__,
        "torchmetrics": torchmetrics.__version__,
        "pillow": PIL.__version__,
        "numpy": np.__version__,
        "safetensors": safetensors.__version__,
    }


def write_json(path, value):
    path.write_text(json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def save_png(path, array_hwc):
    Image.fromarray(array_hwc, mode="RGB").save(path, format="PNG", optimize=False)


# ---------------------------------------------------------------------------------------
# LPIPS
# ---------------------------------------------------------------------------------------


def splitmix64(x):
    """SplitMix64's finaliser on a uint64 array (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def formula_tensor(t, shape, bound):
    n = int(np.prod(shape))
    i = np.arange(n, dtype=np.uint64)
    h = splitmix64((np.uint64(t) << np.uint64(32)) | i)
    u = (h >> np.uint64(40)).astype(np.float64) / float(1 << 24)
    w = ((2.0 * u - 1.0) * bound).astype(np.float32)
    return torch.from_numpy(w.reshape(shape))


def formula_backbone(net):
    """The backbone part of the LPIPS state dict, from the formula."""
    out = {}
    for t, (key, _, shape) in enumerate(convert_lpips.backbone_keys(net)):
        if key.endswith(".weight"):
            fan_in = shape[1] * shape[2] * shape[3]
            bound = np.sqrt(6.0 / fan_in)
        else:
            # the bias of the weight before it
            prev_shape = convert_lpips.backbone_keys(net)[t - 1][2]
            fan_in = prev_shape[1] * prev_shape[2] * prev_shape[3]
            bound = 1.0 / np.sqrt(fan_in)
        out[key] = formula_tensor(t, shape, bound)
    return out


# (height, width) of the 10 pairs; pair 3 is two equal images (distance 0), pair 9 two
# unrelated ones.
LPIPS_SIZES = [(32, 32), (40, 48), (48, 40), (33, 47), (64, 64), (56, 72), (72, 56), (80, 96), (96, 80), (45, 90)]
IDENTICAL_PAIR = 3
UNRELATED_PAIR = 9


def smooth_image(rng, h, w):
    """A random picture with structure at several scales (u8, HWC)."""
    acc = np.zeros((h, w, 3), np.float64)
    for cells, amp in [(3, 90.0), (7, 50.0), (17, 25.0)]:
        small = rng.uniform(-1, 1, (cells, cells, 3))
        up = Image.fromarray(((small + 1) * 127.5).astype(np.uint8), mode="RGB").resize((w, h), Image.BICUBIC)
        acc += (np.asarray(up, np.float64) / 127.5 - 1) * amp
    acc += rng.normal(0, 6, (h, w, 3))
    return np.clip(acc + 128, 0, 255).round().astype(np.uint8)


def perturb(rng, a, k):
    """A second image of the pair: noise, a colour shift and, for some pairs, a shift."""
    b = a.astype(np.float64)
    b += rng.normal(0, 4 + 3 * k, a.shape)
    b += rng.uniform(-20, 20, (1, 1, 3))
    if k % 2 == 1:
        b = np.roll(b, shift=(k % 5) + 1, axis=1)
    return np.clip(b, 0, 255).round().astype(np.uint8)


def signed(u8_hwc):
    return torch.from_numpy(u8_hwc).permute(2, 0, 1)[None].float() / 127.5 - 1


def make_lpips():
    if LPIPS_DIR.exists():
        shutil.rmtree(LPIPS_DIR)
    LPIPS_DIR.mkdir(parents=True)
    rng = np.random.default_rng(20240501)
    pairs = []
    for k, (h, w) in enumerate(LPIPS_SIZES):
        a = smooth_image(rng, h, w)
        if k == IDENTICAL_PAIR:
            b = a.copy()
        elif k == UNRELATED_PAIR:
            b = smooth_image(rng, h, w)
        else:
            b = perturb(rng, a, k)
        save_png(LPIPS_DIR / f"pair{k:02}_a.png", a)
        save_png(LPIPS_DIR / f"pair{k:02}_b.png", b)
        pairs.append((a, b))

    reference = {
        "versions": versions(),
        "pairs": [
            {"a": f"pair{k:02}_a.png", "b": f"pair{k:02}_b.png", "height": h, "width": w}
            for k, (h, w) in enumerate(LPIPS_SIZES)
        ],
        "inputs": "x / 127.5 - 1 of the PNG's u8 values, f32, [1,3,H,W], one pair per call",
        "model": "lpips.LPIPS(pretrained=True, net=NET, version='0.1', pnet_rand=True), eval(), "
        "backbone tensors replaced by the formula of tools/make_eval_fixtures.py",
        "distances": {},
        "weight_checks": {},
    }
    for net in ["alex", "vgg"]:
        model = lpips.LPIPS(pretrained=True, net=net, version="0.1", pnet_rand=True, verbose=False).eval()
        state = model.state_dict()
        backbone = formula_backbone(net)
        for key, value in backbone.items():
            assert state[key].shape == value.shape, key
            state[key] = value
        model.load_state_dict(state)

        # The converter, given the same tensors in torchvision's and the package's layout,
        # gives the model's state dict (less the `lins.N` aliases).
        tv_sd = {tv_key: backbone[key] for key, tv_key, _ in convert_lpips.backbone_keys(net)}
        pkg_sd = torch.load(Path(lpips.__file__).parent / "weights/v0.1" / f"{net}.pth", map_location="cpu")
        converted = convert_lpips.convert(net, tv_sd, pkg_sd)
        expected = {k: v for k, v in model.state_dict().items() if not k.startswith("lins.")}
        assert sorted(converted) == sorted(expected), (sorted(converted), sorted(expected))
        for k in expected:
            assert torch.equal(converted[k], expected[k]), k

        lin = {key: pkg_sd[key].float().contiguous() for key, _ in convert_lpips.lin_keys(net)}
        save_file(lin, str(LPIPS_DIR / f"lin_{net}.safetensors"), metadata={"format": "pt"})

        distances = []
        with torch.no_grad():
            for a, b in pairs:
                d = model(signed(a), signed(b))
                distances.append(float(d.reshape(())))
        assert distances[IDENTICAL_PAIR] == 0.0
        reference["distances"][net] = distances
        reference["weight_checks"][net] = {
            key: {"first": [float(x) for x in value.flatten()[:4]], "sum": float(value.double().sum())}
            for key, value in backbone.items()
        }
        print(f"lpips {net}: {[round(d, 4) for d in distances]}")
    write_json(LPIPS_DIR / "reference.json", reference)


# ---------------------------------------------------------------------------------------
# CLIP
# ---------------------------------------------------------------------------------------

# openai/clip-vit-large-patch14's preprocessor_config.json, sizes scaled to the tiny model.
PREPROCESSOR = {
    "crop_size": 32,
    "do_center_crop": True,
    "do_normalize": True,
    "do_resize": True,
    "feature_extractor_type": "CLIPFeatureExtractor",
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "resample": 3,
    "size": 32,
}

# The newer dict layout, a non-square crop taller than the resized image (zero padding)
# and other statistics: preprocessing only.
PREPROCESSOR_ALT = {
    "crop_size": {"height": 44, "width": 36},
    "do_center_crop": True,
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.5, 0.5, 0.5],
    "image_processor_type": "CLIPImageProcessor",
    "image_std": [0.5, 0.5, 0.5],
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "size": {"shortest_edge": 40},
}

# (height, width): no resize; upscale; downscale; width already the short edge (crop
# only); both resized and cropped; larger.
CLIP_SIZES = [(32, 32), (20, 28), (64, 48), (50, 32), (37, 90), (100, 75)]

LONG_PROMPT = "a very detailed oil painting of " + ", ".join(
    f"{colour} {thing}"
    for colour in ["red", "blue", "green", "golden", "pale", "dark", "bright", "misty"]
    for thing in ["boats", "water lilies", "haystacks", "cathedrals", "bridges"]
)
PROMPTS = [
    "a photo of a cat",
    "<monet-style> a painting of a harbour at dawn",
    "",
    LONG_PROMPT,
    "Café au lait, NAÏVE art!!",
    "a dog",
]


class TorchmetricsClip(CLIPModel):
    """CLIPModel whose get_*_features return the projected tensor, as transformers 4 did:
    torchmetrics 1.9's CLIPScore divides that result by its norm, and fails on the
    `BaseModelOutputWithPooling` that transformers 5 returns."""

    def get_image_features(self, *args, **kwargs):
        return super().get_image_features(*args, **kwargs).pooler_output

    def get_text_features(self, *args, **kwargs):
        return super().get_text_features(*args, **kwargs).pooler_output


def tiny_clip_config():
    text = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=8,
        intermediate_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=77,
        projection_dim=8,
        hidden_act="quick_gelu",
    )
    vision = CLIPVisionConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
        projection_dim=8,
        hidden_act="quick_gelu",
    )
    return CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=8)


def make_tiny_clip():
    if TINY_CLIP.exists():
        shutil.rmtree(TINY_CLIP)
    TINY_CLIP.mkdir(parents=True)
    torch.manual_seed(1234)
    model = CLIPModel(tiny_clip_config()).eval()
    # transformers initialises layer norms to (1, 0) and linear biases to 0: move them so
    # that a swapped or ignored parameter shows in the outputs.
    g = torch.Generator().manual_seed(99)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if name.endswith(".bias") or "layer_norm" in name or "layrnorm" in name or "layernorm" in name:
                p.add_(0.1 * torch.randn(p.shape, generator=g))
    model.save_pretrained(TINY_CLIP)
    write_json(TINY_CLIP / "preprocessor_config.json", PREPROCESSOR)
    for name in ["special_tokens_map.json", "tokenizer_config.json"]:
        shutil.copyfile(SD_TOKENIZER / name, TINY_CLIP / name)
    # The vocabulary and merges (1.6 MB) are atelier-sd's: linked, not copied.
    for name in ["vocab.json", "merges.txt"]:
        os.symlink(os.path.relpath(SD_TOKENIZER / name, TINY_CLIP), TINY_CLIP / name)


# transformers' CLIPConfig rules that a reader of config.json must follow: a
# `text_config_dict` / `vision_config_dict` (as in openai/clip-vit-large-patch14's file)
# replaces every field of the sub-config with its own value or the class default; without
# it, the sub-config's values (here the legacy `eos_token_id` 2) stand.
CONFIG_CASES = {
    "hub_style_dicts": {
        "projection_dim": 768,
        "text_config": {"eos_token_id": 2, "hidden_size": 512, "hidden_act": "gelu", "layer_norm_eps": 1e-6,
                        "max_position_embeddings": 77, "vocab_size": 49408},
        "text_config_dict": {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12,
                             "num_hidden_layers": 12, "projection_dim": 768},
        "vision_config": {"hidden_size": 768, "image_size": 224, "patch_size": 32},
        "vision_config_dict": {"hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 16,
                               "num_hidden_layers": 24, "patch_size": 14, "projection_dim": 768},
    },
    "legacy_eos_no_dicts": {
        "projection_dim": 64,
        "text_config": {"eos_token_id": 2, "hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4,
                        "num_hidden_layers": 3, "hidden_act": "gelu"},
        "vision_config": {"hidden_size": 48, "intermediate_size": 20, "num_attention_heads": 3,
                          "num_hidden_layers": 1, "image_size": 30, "patch_size": 6, "layer_norm_eps": 1e-6},
    },
    "defaults": {},
}
TEXT_FIELDS = ["vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
               "max_position_embeddings", "hidden_act", "layer_norm_eps", "eos_token_id"]
VISION_FIELDS = ["hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_channels",
                 "image_size", "patch_size", "hidden_act", "layer_norm_eps"]


def config_cases():
    out = {}
    for name, raw in CONFIG_CASES.items():
        config = CLIPConfig(**json.loads(json.dumps(raw)))
        out[name] = {
            "config": raw,
            "effective": {
                "projection_dim": config.projection_dim,
                "text": {f: getattr(config.text_config, f) for f in TEXT_FIELDS},
                "vision": {f: getattr(config.vision_config, f) for f in VISION_FIELDS},
            },
        }
    return out


def make_clip():
    if CLIP_DIR.exists():
        shutil.rmtree(CLIP_DIR)
    CLIP_DIR.mkdir(parents=True)
    write_json(CLIP_DIR / "preprocessor_alt.json", PREPROCESSOR_ALT)
    write_json(CLIP_DIR / "config_cases.json", config_cases())

    rng = np.random.default_rng(77)
    images = []
    for k, (h, w) in enumerate(CLIP_SIZES):
        img = smooth_image(rng, h, w)
        save_png(CLIP_DIR / f"image{k}.png", img)
        images.append(torch.from_numpy(np.asarray(Image.open(CLIP_DIR / f"image{k}.png"))).permute(2, 0, 1))

    model = TorchmetricsClip.from_pretrained(TINY_CLIP).eval()
    processor = CLIPProcessor.from_pretrained(TINY_CLIP)
    assert type(processor.image_processor) is CLIPImageProcessor, type(processor.image_processor)
    tokenizer = CLIPTokenizer.from_pretrained(TINY_CLIP)
    pil_processor = CLIPImageProcessorPil.from_pretrained(TINY_CLIP)
    alt_processor = CLIPImageProcessor(**PREPROCESSOR_ALT)

    with torch.no_grad():
        # What torchmetrics' CLIPScore gives the processor: u8 [3,H,W] tensors.
        pixel_values = processor(images=[i for i in images], return_tensors="pt", padding=True)["pixel_values"]
        pixel_values_pil = pil_processor(images=[i for i in images], return_tensors="pt")["pixel_values"]
        pixel_values_alt = alt_processor(images=[i for i in images], return_tensors="pt")["pixel_values"]
        image_embeds = model.get_image_features(pixel_values)

        enc = tokenizer(PROMPTS, padding="max_length", truncation=True, max_length=77, return_tensors="pt")
        input_ids = enc["input_ids"]
        text_embeds = model.get_text_features(input_ids)

        # torchmetrics' own path (padding=True, no truncation, then ids cut at 77).
        raw_tm, _ = _clip_score_update(list(images), list(PROMPTS), model, processor)
        scores_tm = torch.clamp(raw_tm, min=0)

        cos = torch.nn.functional.cosine_similarity(image_embeds, text_embeds, dim=-1)
        ie = image_embeds / image_embeds.norm(p=2, dim=-1, keepdim=True)
        te = text_embeds / text_embeds.norm(p=2, dim=-1, keepdim=True)
        raw = 100 * (ie * te).sum(dim=-1)
        scores = torch.clamp(raw, min=0)

    full_lengths = [len(tokenizer(p)["input_ids"]) for p in PROMPTS]
    pil_diff = float((pixel_values - pixel_values_pil).abs().max())
    tensors = {
        "pixel_values": pixel_values.contiguous(),
        "pixel_values_pil": pixel_values_pil.contiguous(),
        "pixel_values_alt": pixel_values_alt.contiguous(),
        "image_embeds": image_embeds.contiguous(),
        "input_ids": input_ids.contiguous(),
        "text_embeds": text_embeds.contiguous(),
    }
    save_file(tensors, str(CLIP_DIR / "reference.safetensors"), metadata={"format": "pt"})

    long_index = PROMPTS.index(LONG_PROMPT)
    reference = {
        "versions": versions(),
        "images": [{"file": f"image{k}.png", "height": h, "width": w} for k, (h, w) in enumerate(CLIP_SIZES)],
        "prompts": PROMPTS,
        "prompt_token_lengths": full_lengths,
        "processor": type(processor.image_processor).__name__,
        "pixel_values": "CLIPProcessor.from_pretrained(tiny-clip)(images=[u8 [3,H,W] tensors]) as torchmetrics' "
        "CLIPScore calls it: transformers 5's torchvision backend (uint8 antialiased bicubic resize)",
        "pixel_values_pil": "CLIPImageProcessorPil (PIL resize, transformers 4's CLIPImageProcessor)",
        "pixel_values_pil_max_abs_diff": pil_diff,
        "pixel_values_alt": "CLIPImageProcessor(**preprocessor_alt.json)",
        "text": "tokenizer(prompts, padding='max_length', truncation=True, max_length=77); "
        "get_text_features(input_ids).pooler_output",
        "image_embeds": "get_image_features(pixel_values).pooler_output",
        "cosine": [float(x) for x in cos],
        "raw_scores": [float(x) for x in raw],
        "scores": [float(x) for x in scores],
        "scores_torchmetrics": [float(x) for x in scores_tm],
        "raw_scores_torchmetrics": [float(x) for x in raw_tm],
        "pairs": "image k with prompt k",
        "long_prompt_index": long_index,
        "torchmetrics_note": "torchmetrics 1.9 needs the TorchmetricsClip shim on transformers 5; it tokenizes "
        "without truncation and cuts the ids at 77 without an end token, so for the prompt longer than 77 "
        "tokens it pools another token than the end token: its score differs there, and equals "
        "transformers' truncation=True elsewhere",
        "text_config_eos_token_id": model.config.text_config.eos_token_id,
    }
    write_json(CLIP_DIR / "reference.json", reference)
    others = [k for k in range(len(PROMPTS)) if k != long_index]
    tm_diff = max(abs(float(scores_tm[k]) - float(scores[k])) for k in others)
    print(f"clip: scores {[round(float(s), 3) for s in scores]}; torchmetrics {[round(float(s), 3) for s in scores_tm]}")
    print(f"clip: max |torchmetrics - ours| on prompts <= 77 tokens {tm_diff:.3g}; pil vs torchvision {pil_diff:.3g}")


def main():
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()
    make_lpips()
    make_tiny_clip()
    make_clip()


if __name__ == "__main__":
    sys.exit(main())
