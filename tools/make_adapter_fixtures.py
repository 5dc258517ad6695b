#!/usr/bin/env python3
"""Writes the LoRA and textual-inversion golden fixtures used by `worker/sd/tests/adapters.rs`.

    python3 -m venv /tmp/venv-sd && \
        /tmp/venv-sd/bin/pip install torch diffusers transformers open-clip-torch safetensors peft
    /tmp/venv-sd/bin/python tools/make_sd_fixtures.py        # once: the tiny-sd pipeline
    /tmp/venv-sd/bin/python tools/make_adapter_fixtures.py

Made with torch 2.15, diffusers 0.42.1, transformers 5.24.0, peft 0.21.2 (recorded in
`adapters.json`). Needs no network. Runs on the CPU in float32 with fixed seeds, one thread
and deterministic algorithms: two runs write byte-identical files. Reads (never writes)
`worker/sd/tests/fixtures/tiny-sd/` and `reference/tiny-sd.safetensors` (the UNet inputs).

Output, `worker/sd/tests/fixtures/adapters/` (replaced on each run):

    lora-diffusers.safetensors      one random rank-2 LoRA on to_q/to_k/to_v/to_out.0 of every
    lora-peft.safetensors           UNet attention (attn1 and attn2) and q/k/v/out_proj of every
    lora-kohya.safetensors          text-encoder layer, in four layouts with the same down/up
    lora-diffusers-old.safetensors  numbers (see LAYOUTS; the alphas differ, so the outputs do)
    ti/monet-style/learned_embeds.safetensors     `<monet-style>`, 1 vector, shape [hidden]
    ti/vangogh-style/learned_embeds.safetensors   `<vangogh-style>`, 3 vectors, [3, hidden]
    ti/charcoal-style.safetensors                 A1111 `emb_params` [2, hidden], token = stem
    bad/*.safetensors               files atelier must refuse (see BAD_FILES)
    expected.safetensors            what diffusers computes with each file loaded
    adapters.json                   what each file is, the scale, prompts, checks, versions

Each LoRA file is loaded into a fresh `StableDiffusionPipeline` with
`pipe.load_lora_weights(file, adapter_name="lora")` and weighted with
`pipe.set_adapters(["lora"], adapter_weights=[LORA_SCALE])`, which sets the same weight on
the UNet and the text encoder. The recorded outputs are then cross-checked against (a)
`pipe.fuse_lora(lora_scale=LORA_SCALE)` on another fresh pipeline and (b) a plain-torch
merge W += LORA_SCALE * (alpha / rank) * up @ down of this script's own numbers; the script
stops if either differs by more than 1e-5.

Textual inversion: the three files are loaded in order with `pipe.load_textual_inversion`
(the A1111 file with `token="charcoal-style"`: diffusers names a single-key file after its
key, A1111 after the file), and the prompts are converted with `pipe.maybe_convert_prompt`
(`<vangogh-style>` -> `<vangogh-style> <vangogh-style>_1 <vangogh-style>_2`). diffusers only
accepts one embedding per `learned_embeds` file, hence one file per placeholder.
"""

import json
import re
import shutil
import struct
import warnings
from pathlib import Path

import diffusers
import peft
import safetensors
import torch
import transformers
from diffusers import StableDiffusionPipeline
from diffusers.utils import convert_state_dict_to_diffusers
from peft import LoraConfig
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "worker/sd/tests/fixtures"
PIPELINE = FIXTURES / "tiny-sd"
REFERENCE = FIXTURES / "reference/tiny-sd.safetensors"
OUT = FIXTURES / "adapters"

MAX_LENGTH = 77
SEED = 4242
LORA_RANK = 2
LORA_SCALE = 0.7
LORA_INIT_STD = 0.3  # down and up both random: a zero `up` would make the LoRA a no-op
UNET_TARGETS = re.compile(r"\.attn[12]\.(to_q|to_k|to_v|to_out\.0)$")
TEXT_TARGETS = re.compile(r"\.self_attn\.(q_proj|k_proj|v_proj|out_proj)$")
LORA_PROMPTS = ["a photograph of an astronaut riding a horse", "a cat wearing a tiny hat"]

# name -> (description, alpha written in / implied by the file)
LAYOUTS = {
    "diffusers": (
        "`StableDiffusionPipeline.save_lora_weights` of `convert_state_dict_to_diffusers("
        "get_peft_model_state_dict(model))`, as diffusers' LoRA training scripts save: "
        "`unet.<path>.lora.down.weight` / `.lora.up.weight`, text encoder "
        "`text_encoder.<path>.lora_linear_layer.down.weight` / `.up.weight` (transformers 5 "
        "module paths, no `text_model.`). No alpha: diffusers uses alpha = rank.",
        LORA_RANK,
    ),
    "peft": (
        "`StableDiffusionPipeline.save_lora_weights` of the peft state dicts as they are "
        "(`unet.<path>.lora_A.weight` / `.lora_B.weight`, `text_encoder.<path>.lora_A.weight`) "
        "with `unet_lora_adapter_metadata` / `text_encoder_lora_adapter_metadata` = "
        "`LoraConfig(r=2, lora_alpha=1, ...).to_dict()`: the safetensors header's "
        "`lora_adapter_metadata` says lora_alpha 1, which diffusers applies (alpha/rank 0.5).",
        1.0,
    ),
    "kohya": (
        "kohya-ss / A1111: `lora_unet_<path with _>.lora_down.weight` / `.lora_up.weight` / "
        "`.alpha` (0-d float32, 1.0), text encoder `lora_te_text_model_encoder_layers_<i>_"
        "self_attn_<q|k|v|out>_proj.…` (transformers-4 module paths, as every kohya file).",
        1.0,
    ),
    "diffusers-old": (
        "diffusers <= 0.17 attention-processor layout: "
        "`unet.<attn>.processor.to_q_lora.down.weight` (to_k/to_v/to_out_lora too), text encoder "
        "`text_encoder.text_model.encoder.layers.<i>.self_attn.to_q_lora.down.weight` (to_out_lora "
        "= out_proj). No alpha: alpha = rank.",
        LORA_RANK,
    ),
}

TI_PROMPTS = [
    "a painting in the style of <monet-style>",
    "<vangogh-style> starry night",
    "a portrait, charcoal-style",
]
HIDDEN_BAD_WIDTH = 12


def setup_torch():
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float32)
    torch.use_deterministic_algorithms(True)
    warnings.filterwarnings("ignore", category=FutureWarning)
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
        prompts, padding="max_length", truncation=True, max_length=MAX_LENGTH, return_tensors="pt"
    ).input_ids


def canonical_header(path):
    """Rewrites a safetensors header with its `__metadata__` entries sorted.

    safetensors keeps the metadata in a Rust HashMap, so a file with more than one metadata
    entry comes out in a different order on every run; the tensors and their bytes do not
    change (the header keeps its length, padded with spaces to 8 bytes as safetensors does).
    """
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    metadata = header.pop("__metadata__", None)
    if metadata:
        header = {"__metadata__": dict(sorted(metadata.items())), **header}
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    assert len(text) == length, (path, len(text), length)
    path.write_bytes(data[:8] + text + data[8 + length :])
    assert safetensors.safe_open(path, "pt").metadata() == metadata


def max_diff(a, b):
    return float((a - b).abs().max())


# ---------------------------------------------------------------------------------------
# LoRA
# ---------------------------------------------------------------------------------------


def linear_targets(model, pattern):
    return sorted(
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and pattern.search(name)
    )


def random_lora(pipe, generator):
    """{component: {module path: (down [r, in], up [out, r])}}, module paths as in the models."""
    lora = {}
    for component, model, pattern in [
        ("unet", pipe.unet, UNET_TARGETS),
        ("text_encoder", pipe.text_encoder, TEXT_TARGETS),
    ]:
        pairs = {}
        for name in linear_targets(model, pattern):
            layer = model.get_submodule(name)
            down = torch.randn(LORA_RANK, layer.in_features, generator=generator) * LORA_INIT_STD
            up = torch.randn(layer.out_features, LORA_RANK, generator=generator) * LORA_INIT_STD
            pairs[name] = (down, up)
        lora[component] = pairs
    assert len(lora["unet"]) == 128 and len(lora["text_encoder"]) == 12, {
        k: len(v) for k, v in lora.items()
    }
    return lora


def peft_state_dict(pairs):
    """What `peft.utils.get_peft_model_state_dict` gives for a LoRA-injected model."""
    out = {}
    for name, (down, up) in pairs.items():
        out[f"{name}.lora_A.weight"] = down.clone()
        out[f"{name}.lora_B.weight"] = up.clone()
    return out


def adapter_metadata(pairs, alpha):
    """`LoraConfig(...).to_dict()`, as diffusers' training scripts pass to save_lora_weights
    (sets made sorted lists, so that the file is the same on every run)."""
    targets = sorted({name.rsplit(".", 1)[-1] if not name.endswith("to_out.0") else "to_out.0" for name in pairs})
    config = LoraConfig(r=LORA_RANK, lora_alpha=alpha, target_modules=targets, init_lora_weights="gaussian")
    meta = config.to_dict()
    for key, value in list(meta.items()):
        if isinstance(value, set):
            meta[key] = sorted(value)
    return meta


def text_model_path(name):
    """transformers 5 CLIPTextModel paths (`encoder.layers.0…`) as transformers 4 named them."""
    return name if name.startswith("text_model.") else f"text_model.{name}"


def save_diffusers(lora, path):
    StableDiffusionPipeline.save_lora_weights(
        path.parent,
        unet_lora_layers=convert_state_dict_to_diffusers(peft_state_dict(lora["unet"])),
        text_encoder_lora_layers=convert_state_dict_to_diffusers(peft_state_dict(lora["text_encoder"])),
        weight_name=path.name,
    )


def save_peft(lora, path):
    alpha = LAYOUTS["peft"][1]
    StableDiffusionPipeline.save_lora_weights(
        path.parent,
        unet_lora_layers=peft_state_dict(lora["unet"]),
        text_encoder_lora_layers=peft_state_dict(lora["text_encoder"]),
        unet_lora_adapter_metadata=adapter_metadata(lora["unet"], alpha),
        text_encoder_lora_adapter_metadata=adapter_metadata(lora["text_encoder"], alpha),
        weight_name=path.name,
    )


def save_kohya(lora, path):
    alpha = LAYOUTS["kohya"][1]
    tensors = {}
    for component, prefix in [("unet", "lora_unet_"), ("text_encoder", "lora_te_")]:
        for name, (down, up) in lora[component].items():
            if component == "text_encoder":
                name = text_model_path(name)
            key = prefix + name.replace(".", "_")
            tensors[f"{key}.lora_down.weight"] = down.clone()
            tensors[f"{key}.lora_up.weight"] = up.clone()
            tensors[f"{key}.alpha"] = torch.tensor(alpha, dtype=torch.float32)
    metadata = {
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(LORA_RANK),
        "ss_network_alpha": str(alpha),
    }
    save_file(tensors, path, metadata=metadata)


OLD_TEXT_NAMES = {"q_proj": "to_q", "k_proj": "to_k", "v_proj": "to_v", "out_proj": "to_out"}


def save_diffusers_old(lora, path):
    tensors = {}
    for name, (down, up) in lora["unet"].items():
        attn, proj = re.match(r"(.*\.attn[12])\.(to_q|to_k|to_v|to_out)(?:\.0)?$", name).groups()
        key = f"unet.{attn}.processor.{proj}_lora"
        tensors[f"{key}.down.weight"] = down.clone()
        tensors[f"{key}.up.weight"] = up.clone()
    for name, (down, up) in lora["text_encoder"].items():
        attn, proj = text_model_path(name).rsplit(".", 1)
        key = f"text_encoder.{attn}.{OLD_TEXT_NAMES[proj]}_lora"
        tensors[f"{key}.down.weight"] = down.clone()
        tensors[f"{key}.up.weight"] = up.clone()
    save_file(tensors, path, metadata={"format": "pt"})


SAVERS = {
    "diffusers": save_diffusers,
    "peft": save_peft,
    "kohya": save_kohya,
    "diffusers-old": save_diffusers_old,
}


def outputs(pipe, unet_inputs, ids):
    sample, timesteps, context = unet_inputs
    with torch.no_grad():
        unet = pipe.unet(sample, timesteps, encoder_hidden_states=context).sample
        text = pipe.text_encoder(ids)[0]
    return unet, text


def count_lora_layers(model):
    from peft.tuners.lora import LoraLayer

    return sum(isinstance(m, LoraLayer) for m in model.modules())


def lora_references(lora, unet_inputs, ids, base):
    tensors, info = {}, {}
    for layout, (description, alpha) in LAYOUTS.items():
        path = OUT / f"lora-{layout}.safetensors"
        SAVERS[layout](lora, path)
        canonical_header(path)
        alpha_scale = alpha / LORA_RANK

        pipe = load_pipeline()
        pipe.load_lora_weights(path, adapter_name="lora")
        layers = {"unet": count_lora_layers(pipe.unet), "text_encoder": count_lora_layers(pipe.text_encoder)}
        assert layers == {"unet": 128, "text_encoder": 12}, (layout, layers)
        pipe.set_adapters(["lora"], adapter_weights=[LORA_SCALE])
        unet, text = outputs(pipe, unet_inputs, ids)

        fused = load_pipeline()
        fused.load_lora_weights(path, adapter_name="lora")
        fused.fuse_lora(lora_scale=LORA_SCALE)
        fused_unet, fused_text = outputs(fused, unet_inputs, ids)

        manual = load_pipeline()
        with torch.no_grad():
            for component, model in [("unet", manual.unet), ("text_encoder", manual.text_encoder)]:
                for name, (down, up) in lora[component].items():
                    model.get_submodule(name).weight += LORA_SCALE * alpha_scale * (up @ down)
        manual_unet, manual_text = outputs(manual, unet_inputs, ids)

        checks = {
            "fuse_lora_vs_set_adapters": max(max_diff(unet, fused_unet), max_diff(text, fused_text)),
            "manual_merge_vs_set_adapters": max(max_diff(unet, manual_unet), max_diff(text, manual_text)),
        }
        assert all(v < 1e-5 for v in checks.values()), (layout, checks)
        change = {"unet": max_diff(unet, base[0]), "text_encoder": max_diff(text, base[1])}
        assert all(v > 0.05 for v in change.values()), (layout, change)

        tensors[f"{layout}.unet.out"] = unet
        tensors[f"{layout}.text.last_hidden_state"] = text
        keys = sorted(load_file(path).keys())
        info[layout] = {
            "file": path.name,
            "description": description,
            "rank": LORA_RANK,
            "alpha": alpha,
            "alpha_over_rank": alpha_scale,
            "delta_factor": LORA_SCALE * alpha_scale,
            "layers": layers,
            "tensor_count": len(keys),
            "example_keys": [k for k in keys if "down_blocks.0" in k or "down_blocks_0" in k][:3]
            + [k for k in keys if "text" in k or "lora_te" in k][:3],
            "max_abs_change_from_base": change,
            "cross_checks_max_abs": checks,
            "expected": [f"{layout}.unet.out", f"{layout}.text.last_hidden_state"],
        }
    return tensors, info


# ---------------------------------------------------------------------------------------
# Textual inversion
# ---------------------------------------------------------------------------------------


def ti_files(hidden, generator):
    ti = OUT / "ti"
    monet = torch.randn(hidden, generator=generator) * 0.5
    vangogh = torch.randn(3, hidden, generator=generator) * 0.5
    charcoal = torch.randn(2, hidden, generator=generator) * 0.5
    files = [
        (ti / "monet-style/learned_embeds.safetensors", {"<monet-style>": monet}, None),
        (ti / "vangogh-style/learned_embeds.safetensors", {"<vangogh-style>": vangogh}, None),
        (ti / "charcoal-style.safetensors", {"emb_params": charcoal}, "charcoal-style"),
    ]
    for path, tensors, _ in files:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, path)
    return files


def ti_references(files, base_vocab):
    pipe = load_pipeline()
    for path, _, token in files:
        kwargs = {"token": token} if token else {}
        pipe.load_textual_inversion(path, **kwargs)
    prompts = pipe.maybe_convert_prompt(TI_PROMPTS, pipe.tokenizer)
    ids = tokenize(pipe.tokenizer, prompts)
    with torch.no_grad():
        hidden = pipe.text_encoder(ids)[0]
    added = {t: pipe.tokenizer.convert_tokens_to_ids(t) for t in sorted(pipe.tokenizer.added_tokens_encoder)}
    added = {t: i for t, i in added.items() if i >= base_vocab}
    assert sorted(added.values()) == list(range(base_vocab, base_vocab + 6)), added
    # The embedding rows are the files' vectors, in order.
    table = pipe.text_encoder.get_input_embeddings().weight
    rows = torch.cat([t.reshape(-1, table.shape[1]) for _, d, _ in files for t in d.values()])
    assert torch.equal(table[base_vocab:], rows)
    info = {
        "files": [
            {
                "file": str(path.relative_to(OUT)),
                "key": next(iter(tensors)),
                "shape": list(next(iter(tensors.values())).shape),
                "token": token or next(iter(tensors)),
                "layout": "A1111 emb_params (token = file stem)" if token else "diffusers learned_embeds",
            }
            for path, tensors, token in files
        ],
        "load_order": [str(path.relative_to(OUT)) for path, _, _ in files],
        "added_token_ids": added,
        "prompts": TI_PROMPTS,
        "converted_prompts": prompts,
        "expected": ["ti.input_ids", "ti.last_hidden_state"],
    }
    return {"ti.input_ids": ids.to(torch.int64), "ti.last_hidden_state": hidden}, info


# ---------------------------------------------------------------------------------------
# Files atelier must refuse
# ---------------------------------------------------------------------------------------

BAD_LAYER = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
BAD_FILES = {
    "bad/lora-wrong-shape.safetensors": (
        f"`unet.{BAD_LAYER}.lora.down.weight` [2, 7] / `.lora.up.weight` [8, 2]: the layer is 8 -> 8",
        lambda g: {
            f"unet.{BAD_LAYER}.lora.down.weight": torch.randn(2, 7, generator=g),
            f"unet.{BAD_LAYER}.lora.up.weight": torch.randn(8, 2, generator=g),
        },
    ),
    "bad/lora-half-pair.safetensors": (
        "kohya `lora_down` and `alpha` of one layer, no `lora_up`",
        lambda g: {
            f"lora_unet_{BAD_LAYER.replace('.', '_')}.lora_down.weight": torch.randn(2, 8, generator=g),
            f"lora_unet_{BAD_LAYER.replace('.', '_')}.alpha": torch.tensor(1.0),
        },
    ),
    "bad/ti-wrong-width.safetensors": (
        f"`<narrow-style>` [1, {HIDDEN_BAD_WIDTH}] for a text encoder 16 wide",
        lambda g: {"<narrow-style>": torch.randn(1, HIDDEN_BAD_WIDTH, generator=g)},
    ),
}


def bad_files(generator):
    info = {}
    for name, (description, make) in BAD_FILES.items():
        path = OUT / name
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(make(generator), path)
        info[name] = description
    return info


# ---------------------------------------------------------------------------------------


def main():
    setup_torch()
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)

    reference = load_file(REFERENCE)
    unet_inputs = (reference["unet.sample"], reference["unet.timesteps"], reference["unet.encoder_hidden_states"])

    base_pipe = load_pipeline()
    ids = tokenize(base_pipe.tokenizer, LORA_PROMPTS)
    base = outputs(base_pipe, unet_inputs, ids)
    assert max_diff(base[0], reference["unet.out"]) < 1e-5, max_diff(base[0], reference["unet.out"])
    hidden = base_pipe.text_encoder.config.hidden_size
    base_vocab = len(base_pipe.tokenizer)

    generator = torch.Generator().manual_seed(SEED)
    lora = random_lora(base_pipe, generator)
    tensors = {"lora.input_ids": ids.to(torch.int64)}
    lora_tensors, lora_info = lora_references(lora, unet_inputs, ids, base)
    tensors.update(lora_tensors)

    ti_tensors, ti_info = ti_references(ti_files(hidden, generator), base_vocab)
    tensors.update(ti_tensors)
    bad_info = bad_files(generator)

    tensors = {k: v.contiguous() for k, v in tensors.items()}
    save_file(tensors, OUT / "expected.safetensors")

    info = {
        "pipeline": "tiny-sd",
        "unet_inputs": "reference/tiny-sd.safetensors: unet.sample, unet.timesteps, unet.encoder_hidden_states",
        "lora": {
            "scale": LORA_SCALE,
            "scale_semantics": (
                "W' = W + scale * (alpha / rank) * up @ down on every adapted layer of the UNet and "
                "the text encoder: diffusers' `set_adapters([name], adapter_weights=[scale])`, "
                "`fuse_lora(lora_scale=scale)`, and `cross_attention_kwargs={'scale': scale}` "
                "(UNet) with the pipeline's `lora_scale` (text encoder) all mean this"
            ),
            "rank": LORA_RANK,
            "prompts": LORA_PROMPTS,
            "layouts": lora_info,
        },
        "textual_inversion": ti_info,
        "bad_files": bad_info,
        "tensors": {
            k: {"shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch.")} for k, v in tensors.items()
        },
        "versions": {
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
            "safetensors": safetensors.__version__,
        },
    }
    write_json(OUT / "adapters.json", info)

    total = 0
    for f in sorted(OUT.rglob("*")):
        if f.is_file():
            total += f.stat().st_size
            print(f"  {f.stat().st_size:>8}  {f.relative_to(ROOT)}")
    print(f"total {total / 1e3:.1f} kB")
    for layout, entry in lora_info.items():
        print(f"{layout}: change {entry['max_abs_change_from_base']}, checks {entry['cross_checks_max_abs']}")


if __name__ == "__main__":
    main()
