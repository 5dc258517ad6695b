#!/usr/bin/env python3
"""Writes the tiny Stable Diffusion pipelines and reference outputs used by `worker/sd`.

    python3 -m venv /tmp/venv-sd && \
        /tmp/venv-sd/bin/pip install torch diffusers transformers open-clip-torch safetensors
    /tmp/venv-sd/bin/python tools/make_sd_fixtures.py

Made with torch 2.15, diffusers 0.42.1, transformers 5.24.0 (the versions are recorded in
each reference JSON). Needs no network: every model is built from a config and random
init, the tokenizer from the CLIP BPE vocabulary that ships inside open-clip-torch. Runs
on the CPU in float32 with fixed seeds, one thread and deterministic algorithms, so two
runs on the same machine write byte-identical files.

Output (the folders are replaced on each run; everything is committed):

    worker/sd/tests/fixtures/tiny-sd/          SD1.x-shaped random pipeline, f32 weights
    worker/sd/tests/fixtures/tiny-sd-alt/      another config (3 levels, per-block head
                                               counts, linear proj, GELU text model, DDIM
                                               "trailing" scheduler), fp16 variant files only
    worker/sd/tests/fixtures/reference/        <pipeline>.safetensors + <pipeline>.json:
                                               diffusers/transformers outputs to match, and
                                               sd15_param_counts.json (full SD1.5 sizes)
    worker/sd/configs/sd15/                    the real SD1.5 component configs

See worker/sd/tests/fixtures/README.md for the tensor names. Re-run this only to change
the fixtures, and update the Rust tests with it.
"""

import gzip
import json
import shutil
import tempfile
import warnings
from pathlib import Path

import diffusers
import open_clip
import safetensors
import torch
import transformers
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "worker/sd/tests/fixtures"
REFERENCE = FIXTURES / "reference"
SD15_CONFIGS = ROOT / "worker/sd/configs/sd15"

MAX_LENGTH = 77

# ---------------------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------------------

# runwayml/stable-diffusion-v1-5 scheduler/scheduler_config.json, key for key. It has no
# `timestep_spacing`, so a scheduler built from it with `from_config` keeps its own default
# ("leading" for DDIM, "linspace" for Euler and DPM-Solver). A config re-saved by a
# current diffusers would pin "leading" for all of them, so this file is written as is.
SD15_SCHEDULER = {
    "_class_name": "PNDMScheduler",
    "_diffusers_version": "0.6.0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}

# runwayml/stable-diffusion-v1-5 model_index.json, key for key.
SD15_MODEL_INDEX = {
    "_class_name": "StableDiffusionPipeline",
    "_diffusers_version": "0.6.0",
    "feature_extractor": ["transformers", "CLIPImageProcessor"],
    "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"],
    "scheduler": ["diffusers", "PNDMScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}

SD15_UNET = dict(
    act_fn="silu",
    attention_head_dim=8,
    block_out_channels=[320, 640, 1280, 1280],
    center_input_sample=False,
    cross_attention_dim=768,
    down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    downsample_padding=1,
    flip_sin_to_cos=True,
    freq_shift=0,
    in_channels=4,
    layers_per_block=2,
    mid_block_scale_factor=1,
    norm_eps=1e-5,
    norm_num_groups=32,
    out_channels=4,
    sample_size=64,
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
)

SD15_VAE = dict(
    act_fn="silu",
    block_out_channels=[128, 256, 512, 512],
    down_block_types=["DownEncoderBlock2D"] * 4,
    in_channels=3,
    latent_channels=4,
    layers_per_block=2,
    norm_num_groups=32,
    out_channels=3,
    sample_size=512,
    scaling_factor=0.18215,
    up_block_types=["UpDecoderBlock2D"] * 4,
)

# The text half of openai/clip-vit-large-patch14, as in the SD1.5 repository (whose
# text_encoder/config.json says bos 0 / eos 2 / pad 1: legacy values that only the
# pooled output reads, which SD does not use; the tokenizer's ids are 49406 / 49407).
SD15_TEXT = dict(
    architectures=["CLIPTextModel"],
    attention_dropout=0.0,
    bos_token_id=0,
    dropout=0.0,
    eos_token_id=2,
    hidden_act="quick_gelu",
    hidden_size=768,
    initializer_factor=1.0,
    initializer_range=0.02,
    intermediate_size=3072,
    layer_norm_eps=1e-5,
    max_position_embeddings=77,
    num_attention_heads=12,
    num_hidden_layers=12,
    pad_token_id=1,
    projection_dim=768,
    vocab_size=49408,
)

# SD1.x-shaped: 4 levels, 2 resnets per level, 4 heads everywhere (head_dim 2 at level 0,
# 4 elsewhere), conv proj_in/proj_out, a 4-level VAE (latents 16x16 -> images 128x128).
TINY_SD = dict(
    name="tiny-sd",
    seed=1000,
    variant=None,
    unet=dict(
        SD15_UNET,
        attention_head_dim=4,
        block_out_channels=[8, 16, 16, 16],
        norm_num_groups=4,
        cross_attention_dim=16,
        sample_size=16,
        use_linear_projection=False,
    ),
    vae=dict(
        SD15_VAE,
        block_out_channels=[8, 16, 16, 16],
        norm_num_groups=2,
        sample_size=128,
    ),
    text=dict(
        hidden_size=16,
        intermediate_size=37,
        num_hidden_layers=3,
        num_attention_heads=2,
        hidden_act="quick_gelu",
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=1,
    ),
    # Written as the real SD1.5 file, see SD15_SCHEDULER.
    scheduler=SD15_SCHEDULER,
)

# A different shape in every respect the configs allow, so nothing can be hard-coded.
# The scheduler file is a full DDIM config (every key, as a current diffusers saves it).
# Note: StableDiffusionPipeline.__init__ rewrites steps_offset 0 to 1 when it loads this
# folder; with "trailing" spacing steps_offset is unused, and the script checks that the
# timesteps are the same either way.
TINY_SD_ALT = dict(
    name="tiny-sd-alt",
    seed=2000,
    variant="fp16",
    unet=dict(
        SD15_UNET,
        attention_head_dim=[2, 3, 4],
        block_out_channels=[12, 24, 24],
        down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        layers_per_block=1,
        norm_num_groups=6,
        cross_attention_dim=24,
        sample_size=24,
        use_linear_projection=True,
        upcast_attention=False,
    ),
    vae=dict(
        SD15_VAE,
        block_out_channels=[12, 24, 24],
        down_block_types=["DownEncoderBlock2D"] * 3,
        up_block_types=["UpDecoderBlock2D"] * 3,
        layers_per_block=1,
        norm_num_groups=3,
        sample_size=96,
        scaling_factor=0.13025,
    ),
    text=dict(
        hidden_size=24,
        intermediate_size=40,
        num_hidden_layers=2,
        num_attention_heads=3,
        hidden_act="gelu",
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=1,
    ),
    scheduler=json.loads(
        DDIMScheduler(
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            num_train_timesteps=1000,
            clip_sample=False,
            set_alpha_to_one=True,
            steps_offset=0,
            prediction_type="epsilon",
            timestep_spacing="trailing",
        ).to_json_string()
    ),
)

# Shared by both pipelines' text-encoder references.
TEXT_PROMPTS = [
    "",
    "a painting in the style of monet",
    "A photo of 3 cats (no. 42), sitting on the sofa!!  Café naïve 🐱 日本, 2x-zoom; 3.5mm f/1.8",
    "a very long prompt that goes on and on: "
    + " ".join(f"word{i} and colour number {i}," for i in range(20))
    + " the end",
]

# The full pipelines, one per scheduler; the two kinds of negative prompt both show up.
PIPELINE_PROMPT = "a watercolor painting of a lighthouse at dusk"
PIPELINE_RUNS = {
    "ddim": dict(negative_prompt=None),
    "euler": dict(negative_prompt=""),
    "dpmpp2m": dict(negative_prompt="blurry, low quality, watermark"),
}
NUM_INFERENCE_STEPS = 5
GUIDANCE_SCALE = 7.5
UNET_TIMESTEPS = [981.0, 37.5]  # 37.5: Euler feeds fractional timesteps


# ---------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------


def setup_torch():
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float32)
    try:
        torch.use_deterministic_algorithms(True)
    except Exception as e:  # pragma: no cover - older/odd builds
        print(f"note: deterministic algorithms unavailable: {e}")
    # StableDiffusionPipeline's complaint about tiny-sd-alt's steps_offset 0 (see TINY_SD_ALT).
    warnings.filterwarnings(
        "ignore", message=r"(?s).*`steps_offset` should be set to 1", category=FutureWarning
    )
    for lib in (diffusers, transformers):
        lib.utils.logging.set_verbosity_error()
        lib.utils.logging.disable_progress_bar()


def write_json(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False)
    path.write_text(text + "\n", encoding="utf-8")


def param_count(model):
    return sum(p.numel() for p in model.parameters())


def randomize_(model, generator):
    """Makes every parameter random, so that a wrong or swapped tensor shows in the outputs.

    The default init leaves norm weights at 1 and most biases at 0, which would hide a
    Rust loader that skips or swaps them: every 1-D parameter gets +0.1 * N(0, 1) noise,
    and any other parameter that is still constant is replaced by 0.1 * N(0, 1).
    """
    with torch.no_grad():
        for _, p in sorted(model.named_parameters()):
            noise = torch.randn(p.shape, generator=generator) * 0.1
            if p.dim() == 1:
                p.add_(noise)
            elif p.min() == p.max():
                p.copy_(noise)


def dir_size(path):
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


# ---------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------


def bytes_to_unicode():
    """GPT-2/CLIP reversible byte -> printable unicode map, in CLIP's order."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def clip_vocab_and_merges():
    """The 49408-entry CLIP vocabulary, built the way transformers' CLIP conversion does."""
    bpe = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.open(bpe).read().decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    chars = list(bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(tokens)}
    assert len(vocab) == 49408, len(vocab)
    return vocab, merges


def write_tokenizer_files(folder, vocab, merges):
    """vocab.json, merges.txt and special_tokens_map.json, as in the SD1.5 repository.

    transformers 5 no longer writes vocab.json / merges.txt (only tokenizer.json), but the
    hub's SD1.5 folder has no tokenizer.json, so both kinds are kept. vocab.json and
    merges.txt are formatted as transformers' slow CLIPTokenizer.save_vocabulary wrote them
    (the same bytes as tools/make_tokenizer_fixtures.py writes, so git stores them once).
    """
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps(vocab, indent=2, sort_keys=True, ensure_ascii=False)
    (folder / "vocab.json").write_text(text + "\n", encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    write_json(
        folder / "special_tokens_map.json",
        {
            "bos_token": "<|startoftext|>",
            "eos_token": "<|endoftext|>",
            "pad_token": "<|endoftext|>",
            "unk_token": "<|endoftext|>",
        },
    )


def build_tokenizer(files_dir):
    tok = CLIPTokenizer(
        vocab=str(files_dir / "vocab.json"),
        merges=str(files_dir / "merges.txt"),
        pad_token="<|endoftext|>",
        model_max_length=MAX_LENGTH,
    )
    ids = tok("a photo of a cat").input_ids
    assert ids == [49406, 320, 1125, 539, 320, 2368, 49407], ids
    return tok


def tokenize(tokenizer, prompts):
    return tokenizer(
        prompts, padding="max_length", truncation=True, max_length=MAX_LENGTH, return_tensors="pt"
    ).input_ids


def check_tokenizer_folder(folder, reference_ids):
    """The saved tokenizer, and vocab.json + merges.txt alone, give the reference ids."""
    assert torch.equal(tokenize(CLIPTokenizer.from_pretrained(folder), TEXT_PROMPTS), reference_ids)
    with tempfile.TemporaryDirectory() as tmp:
        for name in ["vocab.json", "merges.txt", "special_tokens_map.json"]:
            shutil.copy(folder / name, tmp)
        config = {"model_max_length": MAX_LENGTH, "pad_token": "<|endoftext|>"}
        write_json(Path(tmp) / "tokenizer_config.json", config)
        assert torch.equal(tokenize(CLIPTokenizer.from_pretrained(tmp), TEXT_PROMPTS), reference_ids)


def compare_with_open_clip(ids):
    """Reports prompts where open_clip's own tokenizer (ftfy + html unescape) differs."""
    oc = open_clip.tokenizer.SimpleTokenizer(context_length=MAX_LENGTH)
    oc_ids = oc(TEXT_PROMPTS)
    diffs = []
    for i, p in enumerate(TEXT_PROMPTS):
        a = ids[i].tolist()
        b = oc_ids[i].tolist()
        # open_clip pads with 0, transformers with <|endoftext|>; compare up to the first eos.
        a = a[: a.index(49407) + 1]
        b = b[: b.index(49407) + 1] if 49407 in b else b
        if a != b:
            diffs.append(p)
    return diffs


# ---------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------


def build_unet(config, generator):
    unet = UNet2DConditionModel(**config)
    randomize_(unet, generator)
    return unet.eval()


def build_vae(config, generator):
    vae = AutoencoderKL(**config)
    randomize_(vae, generator)
    return vae.eval()


def build_text_encoder(overrides, generator):
    config = CLIPTextConfig(
        vocab_size=49408,
        max_position_embeddings=MAX_LENGTH,
        layer_norm_eps=1e-5,
        attention_dropout=0.0,
        dropout=0.0,
        **overrides,
    )
    model = CLIPTextModel(config)
    randomize_(model, generator)
    return model.eval()


def build_pipeline(spec, vocab_dir):
    torch.manual_seed(spec["seed"])
    gen = lambda k: torch.Generator().manual_seed(spec["seed"] + k)  # noqa: E731
    unet = build_unet(spec["unet"], gen(1))
    vae = build_vae(spec["vae"], gen(2))
    text_encoder = build_text_encoder(spec["text"], gen(3))
    # save_pipeline then writes the spec's scheduler config file as it is.
    scheduler = getattr(diffusers, spec["scheduler"]["_class_name"]).from_config(spec["scheduler"])
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=build_tokenizer(vocab_dir),
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def save_pipeline(pipe, spec, folder, vocab, merges):
    if spec["variant"] == "fp16":
        pipe.to(torch.float16)
        pipe.save_pretrained(folder, safe_serialization=True, variant="fp16")
    else:
        pipe.save_pretrained(folder, safe_serialization=True)
    write_tokenizer_files(folder / "tokenizer", vocab, merges)
    # The same JSON value as save_pretrained wrote, without the indentation (3.6 -> 1.7 MB).
    tokenizer_json = folder / "tokenizer/tokenizer.json"
    value = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    tokenizer_json.write_text(text + "\n", encoding="utf-8")
    # Not the config of the pipeline's scheduler object, which the pipeline may have
    # fixed up (steps_offset) and which a save would complete with every default.
    write_json(folder / "scheduler/scheduler_config.json", spec["scheduler"])


def load_pipeline(folder, spec):
    kwargs = {"variant": spec["variant"]} if spec["variant"] else {}
    pipe = StableDiffusionPipeline.from_pretrained(folder, dtype=torch.float32, **kwargs)
    pipe.set_progress_bar_config(disable=True)
    for model in (pipe.unet, pipe.vae, pipe.text_encoder):
        assert all(p.dtype == torch.float32 for p in model.parameters())
    return pipe


# ---------------------------------------------------------------------------------------
# References
# ---------------------------------------------------------------------------------------


def text_references(pipe):
    ids = tokenize(pipe.tokenizer, TEXT_PROMPTS)
    with torch.no_grad():
        hidden = pipe.text_encoder(ids)[0]
    return {"text.input_ids": ids.to(torch.int64), "text.last_hidden_state": hidden}


def unet_references(pipe, generator):
    s = pipe.unet.config.sample_size
    c = pipe.unet.config.cross_attention_dim
    sample = torch.randn(2, pipe.unet.config.in_channels, s, s, generator=generator)
    timesteps = torch.tensor(UNET_TIMESTEPS, dtype=torch.float32)
    context = torch.randn(2, MAX_LENGTH, c, generator=generator)
    with torch.no_grad():
        out = pipe.unet(sample, timesteps, encoder_hidden_states=context).sample
    return {
        "unet.sample": sample,
        "unet.timesteps": timesteps,
        "unet.encoder_hidden_states": context,
        "unet.out": out,
    }


def vae_references(pipe, generator):
    s = pipe.unet.config.sample_size
    size = s * pipe.vae_scale_factor
    image = torch.rand(1, 3, size, size, generator=generator) * 2 - 1
    latents = torch.randn(1, pipe.vae.config.latent_channels, s, s, generator=generator)
    with torch.no_grad():
        dist = pipe.vae.encode(image).latent_dist
        decoded = pipe.vae.decode(latents).sample
    return {
        "vae.image": image,
        "vae.mean": dist.mean,
        "vae.logvar": dist.logvar,
        "vae.latents": latents,
        "vae.decoded": decoded,
    }


def make_scheduler(name, config):
    if name == "ddim":
        return DDIMScheduler.from_config(config)
    if name == "euler":
        return EulerDiscreteScheduler.from_config(config)
    if name == "dpmpp2m":
        return DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++", solver_order=2)
    raise ValueError(name)


def timesteps_of(scheduler):
    scheduler.set_timesteps(NUM_INFERENCE_STEPS)
    return [float(t) for t in scheduler.timesteps]


def sigmas_of(scheduler):
    """Euler's and DPM-Solver's sigmas after set_timesteps (one more than steps), else None."""
    sigmas = getattr(scheduler, "sigmas", None)
    return None if sigmas is None else [float(s) for s in sigmas]


def pipeline_references(pipe, folder, generator):
    s = pipe.unet.config.sample_size
    size = s * pipe.vae_scale_factor
    latents = torch.randn(1, pipe.unet.config.in_channels, s, s, generator=generator)
    on_disk = json.loads((folder / "scheduler/scheduler_config.json").read_text(encoding="utf-8"))
    tensors = {"pipeline.latents": latents}
    runs = {}
    for name, run in PIPELINE_RUNS.items():
        scheduler = make_scheduler(name, pipe.scheduler.config)
        config = dict(scheduler.config)
        # diffusers builds this list from a set: sort it so that the JSON is reproducible.
        config["_use_default_values"] = sorted(config.get("_use_default_values", []))
        check = make_scheduler(name, config)
        timesteps = timesteps_of(check)
        # The file itself (before the pipeline's steps_offset fix-up) gives the same steps.
        assert timesteps_of(make_scheduler(name, on_disk)) == timesteps, name
        pipe.scheduler = scheduler
        with torch.no_grad():
            image = pipe(
                PIPELINE_PROMPT,
                negative_prompt=run["negative_prompt"],
                height=size,
                width=size,
                num_inference_steps=NUM_INFERENCE_STEPS,
                guidance_scale=GUIDANCE_SCALE,
                latents=latents.clone(),
                output_type="pt",
            ).images[0]
        tensors[f"pipeline.{name}.image"] = image
        runs[name] = {
            "prompt": PIPELINE_PROMPT,
            "negative_prompt": run["negative_prompt"],
            "num_inference_steps": NUM_INFERENCE_STEPS,
            "guidance_scale": GUIDANCE_SCALE,
            "height": size,
            "width": size,
            "scheduler_class": type(scheduler).__name__,
            "scheduler_config": config,
            "timesteps": timesteps,
            "sigmas": sigmas_of(check),
            "init_noise_sigma": float(scheduler.init_noise_sigma),
            "clamped_fraction": float(((image == 0) | (image == 1)).float().mean()),
        }
    return tensors, runs


def make_references(pipe, spec, folder):
    gen = torch.Generator().manual_seed(spec["seed"] + 100)
    tensors = {}
    tensors.update(text_references(pipe))
    tensors.update(unet_references(pipe, gen))
    tensors.update(vae_references(pipe, gen))
    pipe_tensors, runs = pipeline_references(pipe, folder, gen)
    tensors.update(pipe_tensors)
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    for k, v in tensors.items():
        assert torch.isfinite(v.float()).all(), k
        assert v.dtype == (torch.int64 if k == "text.input_ids" else torch.float32), k

    s = pipe.unet.config.sample_size
    info = {
        "pipeline": spec["name"],
        "folder": spec["name"],
        "variant": spec["variant"],
        "weights_dtype_on_disk": "float16" if spec["variant"] == "fp16" else "float32",
        "versions": {
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "transformers": transformers.__version__,
            "safetensors": safetensors.__version__,
        },
        "param_counts": {
            "unet": param_count(pipe.unet),
            "vae": param_count(pipe.vae),
            "text_encoder": param_count(pipe.text_encoder),
        },
        "text_prompts": TEXT_PROMPTS,
        "text_token_counts": [int((ids != 49407).sum()) + 1 for ids in tensors["text.input_ids"]],
        "unet_timesteps": UNET_TIMESTEPS,
        "latent_size": s,
        "image_size": s * pipe.vae_scale_factor,
        "vae_scale_factor": pipe.vae_scale_factor,
        "vae_scaling_factor": pipe.vae.config.scaling_factor,
        "pipeline_prompts": [PIPELINE_PROMPT],
        "pipelines": runs,
        "tensors": {
            k: {"shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch.")}
            for k, v in tensors.items()
        },
    }
    save_file(tensors, REFERENCE / f"{spec['name']}.safetensors")
    write_json(REFERENCE / f"{spec['name']}.json", info)
    return info, tensors


# ---------------------------------------------------------------------------------------
# Full SD1.5 configs and sizes
# ---------------------------------------------------------------------------------------


def write_sd15_configs():
    with torch.device("meta"):
        unet = UNet2DConditionModel(**SD15_UNET)
        vae = AutoencoderKL(**SD15_VAE)
        text_encoder = CLIPTextModel(CLIPTextConfig(**SD15_TEXT))
    unet.save_config(SD15_CONFIGS / "unet")
    vae.save_config(SD15_CONFIGS / "vae")
    (SD15_CONFIGS / "text_encoder").mkdir(parents=True, exist_ok=True)
    text_encoder.config.to_json_file(SD15_CONFIGS / "text_encoder/config.json")
    write_json(SD15_CONFIGS / "scheduler/scheduler_config.json", SD15_SCHEDULER)
    write_json(SD15_CONFIGS / "model_index.json", SD15_MODEL_INDEX)

    counts = {"unet": param_count(unet), "vae": param_count(vae), "text_encoder": param_count(text_encoder)}
    assert counts["unet"] == 859_520_964, counts
    load = lambda p: json.loads((SD15_CONFIGS / p).read_text(encoding="utf-8"))  # noqa: E731
    write_json(
        REFERENCE / "sd15_param_counts.json",
        {
            "param_counts": counts,
            "configs": {
                "unet": load("unet/config.json"),
                "vae": load("vae/config.json"),
                "text_encoder": load("text_encoder/config.json"),
                "scheduler": load("scheduler/scheduler_config.json"),
            },
            "versions": {"diffusers": diffusers.__version__, "transformers": transformers.__version__},
        },
    )
    return counts


# ---------------------------------------------------------------------------------------


def main():
    setup_torch()
    for path in [FIXTURES / "tiny-sd", FIXTURES / "tiny-sd-alt", REFERENCE, SD15_CONFIGS]:
        shutil.rmtree(path, ignore_errors=True)
    REFERENCE.mkdir(parents=True)

    sd15 = write_sd15_configs()
    print(f"SD1.5 parameter counts: {sd15}")

    vocab, merges = clip_vocab_and_merges()
    with tempfile.TemporaryDirectory() as tmp:
        vocab_dir = Path(tmp)
        write_tokenizer_files(vocab_dir, vocab, merges)
        for spec in [TINY_SD, TINY_SD_ALT]:
            folder = FIXTURES / spec["name"]
            save_pipeline(build_pipeline(spec, vocab_dir), spec, folder, vocab, merges)
            pipe = load_pipeline(folder, spec)
            info, tensors = make_references(pipe, spec, folder)
            check_tokenizer_folder(folder / "tokenizer", tensors["text.input_ids"])
            print(f"\n{spec['name']}: {dir_size(folder) / 1e6:.2f} MB, params {info['param_counts']}")
            print(f"  image {info['image_size']}px, latents {info['latent_size']}, ", end="")
            print(f"token counts {info['text_token_counts']}")
            for name, run in info["pipelines"].items():
                print(f"  {name}: timesteps {run['timesteps']}, clamped {run['clamped_fraction']:.3f}")

    # Both pipelines share the tokenizer, so the last ids stand for both.
    diffs = compare_with_open_clip(tensors["text.input_ids"])
    if diffs:
        print(f"\nnote: open_clip's tokenizer differs from transformers' on: {diffs}")

    print("\nfiles:")
    total = 0
    for root in [FIXTURES / "tiny-sd", FIXTURES / "tiny-sd-alt", REFERENCE, SD15_CONFIGS]:
        for f in sorted(root.rglob("*")):
            if f.is_file():
                total += f.stat().st_size
                print(f"  {f.stat().st_size:>10}  {f.relative_to(ROOT)}")
    print(f"total {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
