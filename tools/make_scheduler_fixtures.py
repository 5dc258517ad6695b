"""Golden fixtures for `atelier-sd`'s noise schedulers, recorded from diffusers 0.42.1.

Writes `worker/sd/tests/fixtures/schedulers/`:

- `cases.json`: for every case, the scheduler config (fed to `from_config`, so each
  class keeps only the fields it knows and fills in its own defaults), the number of
  inference steps, the timesteps, the sigmas (Euler and DPM-Solver) and
  `init_noise_sigma`; timestep sweeps over many step counts; the DDPM cases.
- `tensors.safetensors`: float32 tensors. For a trajectory case `<name>`:
  `<name>/sample` [1, 4, 8, 8], the initial latent (already multiplied by
  `init_noise_sigma`, as the pipeline does), and per step `i`, stacked on a leading
  axis: `<name>/model_output` (the fixed random "UNet output" fed at step i),
  `<name>/scaled` (`scale_model_input` of the sample at step i; Euler only, the
  others return their input) and `<name>/prev_sample`
  (`step(...).prev_sample`, the sample for step i + 1). For a DDPM case `<name>`:
  `<name>/alphas_cumprod` [1000], `<name>/original`, `<name>/noise`, `<name>/noisy`,
  `<name>/velocity` [4, 4, 8, 8] (batch with per-example timesteps), and the
  `<name>/step_*` tensors of a few single DDPM steps with their recorded variance noise.

The tests in `worker/sd/tests/schedulers.rs` replay every trajectory with the Rust
schedulers on the NdArray backend and compare.

Setup (CPU-only torch is enough; no model weights are downloaded):

    python3 -m venv /tmp/venv-sd
    /tmp/venv-sd/bin/pip install --index-url https://download.pytorch.org/whl/cpu torch
    /tmp/venv-sd/bin/pip install diffusers==0.42.1 safetensors numpy

Run from the repository root:

    /tmp/venv-sd/bin/python tools/make_scheduler_fixtures.py
"""

import json
import os
import sys

import diffusers
import numpy as np
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
)
from safetensors.torch import save_file

DIFFUSERS_VERSION = "0.42.1"
OUT_DIR = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "worker", "sd", "tests", "fixtures", "schedulers"
)
SHAPE = (1, 4, 8, 8)

# `scheduler/scheduler_config.json` of runwayml/stable-diffusion-v1-5 (a PNDMScheduler config).
SD15 = {
    "_class_name": "PNDMScheduler",
    "_diffusers_version": "0.6.0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
    "clip_sample": False,
}

CLASSES = {
    "ddim": DDIMScheduler,
    "euler": EulerDiscreteScheduler,
    "dpmpp2m": DPMSolverMultistepScheduler,
}


def sd15(**overrides):
    config = dict(SD15)
    config.update(overrides)
    return config


# (name, kind, config, num_inference_steps)
TRAJECTORIES = [
    # DDIM
    ("ddim_sd15_25", "ddim", sd15(), 25),
    ("ddim_sd15_leading_10", "ddim", sd15(), 10),
    ("ddim_sd15_trailing_10", "ddim", sd15(timestep_spacing="trailing"), 10),
    ("ddim_sd15_linspace_10", "ddim", sd15(timestep_spacing="linspace"), 10),
    ("ddim_offset0_alpha_one_10", "ddim", sd15(steps_offset=0, set_alpha_to_one=True), 10),
    ("ddim_sd15_v_pred_10", "ddim", sd15(prediction_type="v_prediction"), 10),
    # SD 2.x-style zero-terminal-SNR: trailing, rescaled betas, v-prediction.
    (
        "ddim_zero_snr_v_pred_trailing_10",
        "ddim",
        sd15(prediction_type="v_prediction", timestep_spacing="trailing", rescale_betas_zero_snr=True),
        10,
    ),
    ("ddim_sd15_sample_pred_clip_10", "ddim", sd15(prediction_type="sample", clip_sample=True), 10),
    # An empty config: DDIM's own defaults (linear betas, clip_sample, set_alpha_to_one).
    ("ddim_defaults_linear_10", "ddim", {}, 10),
    (
        "ddim_cosine_clip_range_10",
        "ddim",
        {"beta_schedule": "squaredcos_cap_v2", "clip_sample_range": 2.0, "timestep_spacing": "trailing"},
        10,
    ),
    # diffusers quirk: DDIM's previous timestep is t - 1000 // 7 = t - 142, not the next
    # "trailing" timestep (999, 856, 713, ...).
    ("ddim_sd15_trailing_7", "ddim", sd15(timestep_spacing="trailing"), 7),
    # diffusers quirk: np.arange yields one extra, negative timestep (-1) for 61 steps.
    ("ddim_sd15_trailing_61", "ddim", sd15(timestep_spacing="trailing"), 61),
    # Euler
    ("euler_sd15_20", "euler", sd15(), 20),
    ("euler_sd15_leading_10", "euler", sd15(timestep_spacing="leading"), 10),
    ("euler_sd15_trailing_10", "euler", sd15(timestep_spacing="trailing"), 10),
    ("euler_sd15_v_pred_10", "euler", sd15(prediction_type="v_prediction"), 10),
    ("euler_sd15_sample_pred_sigma_min_10", "euler", sd15(prediction_type="sample", final_sigmas_type="sigma_min"), 10),
    ("euler_defaults_linear_7", "euler", {}, 7),
    (
        "euler_zero_snr_v_pred_trailing_10",
        "euler",
        sd15(prediction_type="v_prediction", timestep_spacing="trailing", rescale_betas_zero_snr=True),
        10,
    ),
    ("euler_sd15_karras_10", "euler", sd15(use_karras_sigmas=True), 10),
    ("euler_sd15_karras_sigma_range_10", "euler", sd15(use_karras_sigmas=True, sigma_min=0.1, sigma_max=10.0), 10),
    # DPM-Solver++ 2M
    ("dpmpp2m_sd15_5", "dpmpp2m", sd15(), 5),
    ("dpmpp2m_sd15_10", "dpmpp2m", sd15(), 10),
    ("dpmpp2m_sd15_25", "dpmpp2m", sd15(), 25),
    ("dpmpp2m_sd15_v_pred_10", "dpmpp2m", sd15(prediction_type="v_prediction"), 10),
    ("dpmpp2m_sd15_sample_pred_10", "dpmpp2m", sd15(prediction_type="sample"), 10),
    ("dpmpp2m_sd15_leading_10", "dpmpp2m", sd15(timestep_spacing="leading"), 10),
    ("dpmpp2m_sd15_trailing_10", "dpmpp2m", sd15(timestep_spacing="trailing"), 10),
    ("dpmpp2m_no_lower_order_final_10", "dpmpp2m", sd15(lower_order_final=False), 10),
    ("dpmpp2m_sigma_min_10", "dpmpp2m", sd15(final_sigmas_type="sigma_min"), 10),
    ("dpmpp2m_sigma_min_no_lof_16", "dpmpp2m", sd15(final_sigmas_type="sigma_min", lower_order_final=False), 16),
    ("dpmpp2m_sigma_min_euler_at_final_16", "dpmpp2m", sd15(final_sigmas_type="sigma_min", euler_at_final=True), 16),
    ("dpmpp2m_heun_10", "dpmpp2m", sd15(solver_type="heun"), 10),
    ("dpmpp2m_order1_10", "dpmpp2m", sd15(solver_order=1), 10),
    ("dpmpp2m_order3_10", "dpmpp2m", sd15(solver_order=3), 10),
    ("dpmpp2m_order3_16", "dpmpp2m", sd15(solver_order=3), 16),
    ("dpmpp2m_defaults_linear_10", "dpmpp2m", {}, 10),
    (
        "dpmpp2m_zero_snr_v_pred_trailing_10",
        "dpmpp2m",
        sd15(prediction_type="v_prediction", timestep_spacing="trailing", rescale_betas_zero_snr=True),
        10,
    ),
    ("dpmpp2m_sd15_karras_10", "dpmpp2m", sd15(use_karras_sigmas=True), 10),
    ("dpmpp2m_sd15_karras_25", "dpmpp2m", sd15(use_karras_sigmas=True), 25),
    # Karras on the cosine schedule repeats timestep 998 (sigma_max is huge); diffusers then
    # finds its step index from the second 998 and runs off the end, unless the index is
    # set explicitly (set_begin_index(0), as img2img does): recorded that way.
    ("dpmpp2m_cosine_karras_10", "dpmpp2m", {"beta_schedule": "squaredcos_cap_v2", "use_karras_sigmas": True}, 10),
    ("dpmpp2m_lambda_min_clipped_10", "dpmpp2m", sd15(lambda_min_clipped=-2.5), 10),
]

SWEEP_STEPS = list(range(1, 26)) + [50, 61, 100, 103]
SWEEP_CONFIGS = [
    ("karras", sd15(use_karras_sigmas=True)),
    ("cosine_karras", {"beta_schedule": "squaredcos_cap_v2", "use_karras_sigmas": True}),
    ("leading", sd15(timestep_spacing="leading")),
    ("trailing", sd15(timestep_spacing="trailing")),
    ("linspace", sd15(timestep_spacing="linspace")),
    ("leading_offset0", sd15(timestep_spacing="leading", steps_offset=0)),
]

DDPM_CASES = [
    ("ddpm_sd15", sd15()),
    ("ddpm_defaults_linear", {}),
    ("ddpm_cosine_v_pred", {"beta_schedule": "squaredcos_cap_v2", "prediction_type": "v_prediction"}),
    (
        "ddpm_zero_snr_v_pred",
        sd15(prediction_type="v_prediction", rescale_betas_zero_snr=True, variance_type="fixed_large"),
    ),
    ("ddpm_trained_betas", {"trained_betas": np.linspace(1e-4, 3e-2, 1000).tolist(), "clip_sample": False}),
]
DDPM_NOISE_TIMESTEPS = [0, 1, 500, 999]
DDPM_STEP_TIMESTEPS = [999, 500, 10, 1, 0]


def f32(x):
    """A float32 value as the shortest decimal that round-trips through float32."""
    return float(str(np.float32(x)))


def int_or_f32(values):
    return [int(v) if float(v).is_integer() else f32(v) for v in values]


def scalar(x):
    return f32(x.item() if isinstance(x, torch.Tensor) else x)


def make(kind, config, steps):
    scheduler = CLASSES[kind].from_config(config)
    scheduler.set_timesteps(steps)
    return scheduler


def describe(scheduler):
    out = {
        "timesteps": int_or_f32(scheduler.timesteps.tolist()),
        "init_noise_sigma": scalar(scheduler.init_noise_sigma),
    }
    if hasattr(scheduler, "sigmas") and not isinstance(scheduler, DDIMScheduler):
        out["sigmas"] = [f32(s) for s in scheduler.sigmas.tolist()]
    return out


def trajectory(name, kind, config, steps, seed, tensors):
    scheduler = make(kind, config, steps)
    if len(set(scheduler.timesteps.tolist())) < len(scheduler.timesteps):
        scheduler.set_begin_index(0)
    generator = torch.Generator().manual_seed(seed)
    sample = torch.randn(SHAPE, generator=generator, dtype=torch.float32) * scheduler.init_noise_sigma
    tensors[f"{name}/sample"] = sample.clone()
    outputs, scaled, prev = [], [], []
    for t in scheduler.timesteps:
        model_output = torch.randn(SHAPE, generator=generator, dtype=torch.float32)
        model_input = scheduler.scale_model_input(sample, t)
        sample = scheduler.step(model_output, t, sample).prev_sample
        outputs.append(model_output)
        scaled.append(model_input)
        prev.append(sample.clone())
    tensors[f"{name}/model_output"] = torch.stack(outputs)
    if kind == "euler":
        tensors[f"{name}/scaled"] = torch.stack(scaled)
    else:
        # DDIM and DPM-Solver do not scale the model input; the test checks it is unchanged.
        assert all(torch.equal(a, b) for a, b in zip(scaled, [tensors[f"{name}/sample"]] + prev[:-1]))
    tensors[f"{name}/prev_sample"] = torch.stack(prev)
    case = {"name": name, "kind": kind, "config": config, "num_inference_steps": steps}
    case.update(describe(scheduler))
    return case


def ddpm_case(name, config, seed, tensors):
    scheduler = DDPMScheduler.from_config(config)
    generator = torch.Generator().manual_seed(seed)
    batch = (len(DDPM_NOISE_TIMESTEPS),) + SHAPE[1:]
    original = torch.randn(batch, generator=generator)
    noise = torch.randn(batch, generator=generator)
    timesteps = torch.tensor(DDPM_NOISE_TIMESTEPS, dtype=torch.int64)
    tensors[f"{name}/alphas_cumprod"] = scheduler.alphas_cumprod.clone()
    tensors[f"{name}/original"] = original
    tensors[f"{name}/noise"] = noise
    tensors[f"{name}/noisy"] = scheduler.add_noise(original, noise, timesteps)
    tensors[f"{name}/velocity"] = scheduler.get_velocity(original, noise, timesteps)
    # Single steps of the full 1000-step chain (no set_timesteps: prev_t = t - 1).
    samples, outputs, variance_noise, prev = [], [], [], []
    for t in DDPM_STEP_TIMESTEPS:
        sample = torch.randn(SHAPE, generator=generator)
        model_output = torch.randn(SHAPE, generator=generator)
        noise_seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        step = scheduler.step(model_output, t, sample, generator=torch.Generator().manual_seed(noise_seed))
        # DDPMScheduler.step draws its variance noise as randn(shape, generator) when t > 0.
        noise_t = torch.randn(SHAPE, generator=torch.Generator().manual_seed(noise_seed))
        samples.append(sample)
        outputs.append(model_output)
        variance_noise.append(noise_t)
        prev.append(step.prev_sample)
    tensors[f"{name}/step_sample"] = torch.stack(samples)
    tensors[f"{name}/step_model_output"] = torch.stack(outputs)
    tensors[f"{name}/step_variance_noise"] = torch.stack(variance_noise)
    tensors[f"{name}/step_prev_sample"] = torch.stack(prev)
    return {
        "name": name,
        "config": config,
        "add_noise_timesteps": DDPM_NOISE_TIMESTEPS,
        "step_timesteps": DDPM_STEP_TIMESTEPS,
        "betas_first_last": [f32(scheduler.betas[0]), f32(scheduler.betas[-1])],
    }


def main():
    if diffusers.__version__ != DIFFUSERS_VERSION:
        sys.exit(f"expected diffusers {DIFFUSERS_VERSION}, found {diffusers.__version__}")
    tensors = {}
    trajectories = [
        trajectory(name, kind, config, steps, seed, tensors)
        for seed, (name, kind, config, steps) in enumerate(TRAJECTORIES)
    ]
    sweeps = []
    for kind in CLASSES:
        for label, config in SWEEP_CONFIGS:
            if "karras" in label and kind == "ddim":
                continue
            per_steps = {str(n): describe(make(kind, config, n)) for n in SWEEP_STEPS}
            sweeps.append({"kind": kind, "label": label, "config": config, "steps": per_steps})
    ddpm = [ddpm_case(name, config, 1000 + seed, tensors) for seed, (name, config) in enumerate(DDPM_CASES)]
    cases = {
        "diffusers_version": diffusers.__version__,
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "shape": list(SHAPE),
        "trajectories": trajectories,
        "sweeps": sweeps,
        "ddpm": ddpm,
    }
    os.makedirs(OUT_DIR, exist_ok=True)
    with open(os.path.join(OUT_DIR, "cases.json"), "w") as f:
        json.dump(cases, f, separators=(",", ":"))
        f.write("\n")
    tensors = {k: v.to(torch.float32).contiguous() for k, v in tensors.items()}
    save_file(tensors, os.path.join(OUT_DIR, "tensors.safetensors"))
    for file in ("cases.json", "tensors.safetensors"):
        size = os.path.getsize(os.path.join(OUT_DIR, file))
        print(f"{file}: {size} bytes")


if __name__ == "__main__":
    main()
