//! The schedulers against golden values recorded from diffusers 0.42.1 by
//! `tools/make_scheduler_fixtures.py` (fixtures in `tests/fixtures/schedulers/`).
//!
//! Tolerances:
//! - integer timesteps exactly; float32 schedule values (Euler's fractional timesteps,
//!   sigmas, `init_noise_sigma`, `alphas_cumprod`) to 1e-6 relative. The Rust side uses a
//!   correctly rounded `sqrt`; torch's CPU float32 `sqrt` is off by up to 0.75 ulp, so
//!   about a fifth of the sigmas differ by 1 ulp.
//! - every tensor output (`scale_model_input`, each `step`, DDPM's `add_noise`,
//!   `get_velocity` and `step`) from diffusers' inputs: max abs error <= 1e-5 times the
//!   operands' scale, `|rust - diffusers| <= 1e-5 * max(1, max |input|, max |output|)`.
//!   The recorded model outputs are random, not a denoiser's, so samples grow to O(10)
//!   to O(100) and a plain 1e-5 absolute bound would be below float32 resolution.
//! - whole trajectories run by the Rust scheduler from its own outputs (as a pipeline
//!   does): 1e-4 of the scale at every step. Rounding differences carry over from step
//!   to step; the worst is zero-terminal-SNR Euler, whose first step has sigma 4096 and
//!   subtracts two numbers of size ~1e4 to get ~1e2 (1 ulp of that sigma moves it).

mod common;

use std::collections::HashMap;
use std::path::PathBuf;

use atelier_sd::schedulers::{
    build_scheduler, Ddpm, DpmPlusPlus2M, DpmSolverConfig, Euler, EulerConfig, SchedulerError,
    SchedulerKind,
};
use burn::tensor::{Tensor, TensorData};
use serde_json::{json, Value};

type B = common::TestBackend;

const TENSOR_TOL: f32 = 1e-5;
const FREE_RUNNING_TOL: f32 = 1e-4;
const SCHEDULE_REL_TOL: f64 = 1e-6;

struct Fixtures {
    cases: Value,
    tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
}

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/schedulers")
}

fn load() -> Fixtures {
    let dir = fixture_dir();
    let cases: Value =
        serde_json::from_slice(&std::fs::read(dir.join("cases.json")).expect("read cases.json"))
            .expect("parse cases.json");
    let bytes = std::fs::read(dir.join("tensors.safetensors")).expect("read tensors.safetensors");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("parse tensors.safetensors");
    let tensors = st
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}");
            let data = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            (name, (view.shape().to_vec(), data))
        })
        .collect();
    Fixtures { cases, tensors }
}

impl Fixtures {
    fn raw(&self, name: &str) -> &(Vec<usize>, Vec<f32>) {
        self.tensors
            .get(name)
            .unwrap_or_else(|| panic!("fixture tensor `{name}` missing"))
    }

    /// Slice `index` of a stacked tensor `[n, ...rest]` as a tensor of rank D.
    fn item<const D: usize>(&self, name: &str, index: Option<usize>) -> Tensor<B, D> {
        let (shape, data) = self.raw(name);
        let (shape, data) = match index {
            None => (shape.clone(), data.clone()),
            Some(i) => {
                let rest: Vec<usize> = shape[1..].to_vec();
                let len: usize = rest.iter().product();
                (rest, data[i * len..(i + 1) * len].to_vec())
            }
        };
        Tensor::from_data(TensorData::new(data, shape), &Default::default())
    }
}

fn max_abs<const D: usize>(t: &Tensor<B, D>) -> f32 {
    t.to_data()
        .to_vec::<f32>()
        .unwrap()
        .iter()
        .fold(0f32, |m, x| m.max(x.abs()))
}

/// Max abs difference (NaN if either side has a NaN where the other has not).
fn diff<const D: usize>(actual: Tensor<B, D>, expected: Tensor<B, D>) -> f32 {
    assert_eq!(actual.dims(), expected.dims());
    let a = actual.into_data().to_vec::<f32>().unwrap();
    let e = expected.into_data().to_vec::<f32>().unwrap();
    a.iter()
        .zip(&e)
        .map(|(x, y)| if x == y { 0.0 } else { (x - y).abs() })
        .fold(0f32, |m, d| {
            if d.is_nan() || m.is_nan() {
                f32::NAN
            } else {
                m.max(d)
            }
        })
}

/// Checks `actual` against diffusers' `expected`; `input_scale` is the largest magnitude
/// among the operation's inputs. Returns the abs error and the scale it was judged at.
fn assert_close<const D: usize>(
    what: &str,
    actual: Tensor<B, D>,
    expected: Tensor<B, D>,
    input_scale: f32,
    tol: f32,
) -> (f32, f32) {
    let scale = 1f32.max(input_scale).max(max_abs(&expected));
    let err = diff(actual, expected);
    assert!(
        err <= tol * scale,
        "{what}: max abs error {err:e} > {tol:e} * {scale}"
    );
    (err, scale)
}

fn numbers(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("a list")
        .iter()
        .map(|x| x.as_f64().expect("a number"))
        .collect()
}

fn assert_schedule(what: &str, actual: &[f64], expected: &[f64]) {
    assert_eq!(
        actual.len(),
        expected.len(),
        "{what}: length\n  rust {actual:?}\n  diffusers {expected:?}"
    );
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!(
            (a - e).abs() <= SCHEDULE_REL_TOL * e.abs().max(1.0),
            "{what}[{i}]: rust {a} vs diffusers {e}"
        );
    }
}

fn kind(case: &Value) -> SchedulerKind {
    case["kind"].as_str().unwrap().parse().unwrap()
}

/// Sigmas of the concrete Euler / DPM-Solver types (not part of the trait).
fn sigmas(kind: SchedulerKind, config: &Value, steps: usize) -> Option<Vec<f64>> {
    let s: Vec<f32> = match kind {
        SchedulerKind::Ddim => return None,
        SchedulerKind::Euler => Euler::new(EulerConfig::from_json(config).unwrap(), steps)
            .unwrap()
            .sigmas()
            .to_vec(),
        SchedulerKind::DpmPlusPlus2M => {
            DpmPlusPlus2M::<B>::new(DpmSolverConfig::from_json(config).unwrap(), steps)
                .unwrap()
                .sigmas()
                .to_vec()
        }
    };
    Some(s.into_iter().map(f64::from).collect())
}

fn check_schedule(what: &str, kind: SchedulerKind, config: &Value, steps: usize, expected: &Value) {
    let scheduler =
        build_scheduler::<B>(kind, config, steps).unwrap_or_else(|e| panic!("{what}: {e}"));
    let timesteps = numbers(&expected["timesteps"]);
    if kind == SchedulerKind::Euler {
        assert_schedule(
            &format!("{what} timesteps"),
            scheduler.timesteps(),
            &timesteps,
        );
    } else {
        assert_eq!(
            scheduler.timesteps(),
            timesteps.as_slice(),
            "{what} timesteps"
        );
    }
    assert_schedule(
        &format!("{what} init_noise_sigma"),
        &[scheduler.init_noise_sigma()],
        &[expected["init_noise_sigma"].as_f64().unwrap()],
    );
    if let Some(s) = sigmas(kind, config, steps) {
        assert_schedule(&format!("{what} sigmas"), &s, &numbers(&expected["sigmas"]));
    }
}

/// Worst error seen over a trajectory: (max abs error, max error / scale).
#[derive(Default)]
struct Worst(f32, f32);

impl Worst {
    fn track(&mut self, (err, scale): (f32, f32)) {
        self.0 = self.0.max(err);
        self.1 = self.1.max(err / scale);
    }
}

/// Runs one recorded trajectory through the Rust scheduler. `teacher_forced`: each step
/// starts from diffusers' sample (the per-step arithmetic); otherwise from the Rust
/// scheduler's own previous output (what a pipeline does; rounding differences carry on).
fn run_trajectory(fx: &Fixtures, case: &Value, teacher_forced: bool, tol: f32) -> Worst {
    let name = case["name"].as_str().unwrap();
    let kind = kind(case);
    let steps = case["num_inference_steps"].as_u64().unwrap() as usize;
    let mode = if teacher_forced {
        "teacher-forced"
    } else {
        "free-running"
    };
    let mut scheduler = build_scheduler::<B>(kind, &case["config"], steps).unwrap();
    let mut sample: Tensor<B, 4> = fx.item(&format!("{name}/sample"), None);
    let mut worst = Worst::default();
    for i in 0..scheduler.timesteps().len() {
        if teacher_forced && i > 0 {
            sample = fx.item(&format!("{name}/prev_sample"), Some(i - 1));
        }
        let input_scale = max_abs(&sample);
        let scaled = scheduler.scale_model_input(sample.clone(), i);
        if kind == SchedulerKind::Euler {
            let expected = fx.item(&format!("{name}/scaled"), Some(i));
            let what = format!("{name} ({mode}) scale_model_input[{i}]");
            worst.track(assert_close(&what, scaled, expected, input_scale, tol));
        } else {
            assert_eq!(
                diff(scaled, sample.clone()),
                0.0,
                "{name}: scale_model_input must be the identity"
            );
        }
        let model_output = fx.item(&format!("{name}/model_output"), Some(i));
        sample = scheduler.step(model_output, i, sample);
        let expected = fx.item(&format!("{name}/prev_sample"), Some(i));
        worst.track(assert_close(
            &format!("{name} ({mode}) step[{i}]"),
            sample.clone(),
            expected,
            input_scale,
            tol,
        ));
    }
    worst
}

#[test]
fn trajectories_match_diffusers() {
    let fx = load();
    let cases = fx.cases["trajectories"].as_array().unwrap();
    assert!(cases.len() >= 30);
    let mut report = Vec::new();
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let steps = case["num_inference_steps"].as_u64().unwrap() as usize;
        check_schedule(name, kind(case), &case["config"], steps, case);
        let forced = run_trajectory(&fx, case, true, TENSOR_TOL);
        let free = run_trajectory(&fx, case, false, FREE_RUNNING_TOL);
        report.push(format!(
            "{name:38} {:>3} timesteps | per step: abs {:.1e} rel {:.1e} | free-running: abs {:.1e} rel {:.1e}",
            case["timesteps"].as_array().unwrap().len(),
            forced.0,
            forced.1,
            free.0,
            free.1
        ));
    }
    println!("{}", report.join("\n"));
}

#[test]
fn timestep_sweeps_match_diffusers() {
    let fx = load();
    let mut checked = 0;
    for sweep in fx.cases["sweeps"].as_array().unwrap() {
        let kind = kind(sweep);
        let label = sweep["label"].as_str().unwrap();
        for (steps, expected) in sweep["steps"].as_object().unwrap() {
            let what = format!("{kind} {label} {steps} steps");
            check_schedule(
                &what,
                kind,
                &sweep["config"],
                steps.parse().unwrap(),
                expected,
            );
            checked += 1;
        }
    }
    assert!(checked >= 3 * 4 * 30, "{checked} schedules checked");
}

#[test]
fn ddpm_matches_diffusers() {
    let fx = load();
    for case in fx.cases["ddpm"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let ddpm = Ddpm::new(&case["config"]).unwrap();
        let (_, expected) = fx.raw(&format!("{name}/alphas_cumprod"));
        let actual: Vec<f64> = ddpm.alphas_cumprod().iter().map(|&x| x as f64).collect();
        let expected: Vec<f64> = expected.iter().map(|&x| x as f64).collect();
        assert_schedule(&format!("{name} alphas_cumprod"), &actual, &expected);
        let betas = numbers(&case["betas_first_last"]);
        assert_schedule(
            &format!("{name} betas"),
            &[ddpm.betas()[0] as f64, ddpm.betas()[999] as f64],
            &betas,
        );

        let timesteps: Vec<usize> = numbers(&case["add_noise_timesteps"])
            .iter()
            .map(|&t| t as usize)
            .collect();
        let original: Tensor<B, 4> = fx.item(&format!("{name}/original"), None);
        let noise: Tensor<B, 4> = fx.item(&format!("{name}/noise"), None);
        let input_scale = max_abs(&original).max(max_abs(&noise));
        let noisy = ddpm.add_noise(original.clone(), noise.clone(), &timesteps);
        assert_close(
            &format!("{name} add_noise"),
            noisy,
            fx.item(&format!("{name}/noisy"), None),
            input_scale,
            TENSOR_TOL,
        );
        let velocity = ddpm.velocity(original.clone(), noise.clone(), &timesteps);
        let expected = fx.item(&format!("{name}/velocity"), None);
        assert_close(
            &format!("{name} get_velocity"),
            velocity,
            expected,
            input_scale,
            TENSOR_TOL,
        );

        for (i, t) in numbers(&case["step_timesteps"]).into_iter().enumerate() {
            let sample: Tensor<B, 4> = fx.item(&format!("{name}/step_sample"), Some(i));
            let input_scale = max_abs(&sample);
            let prev = ddpm
                .step(
                    fx.item::<4>(&format!("{name}/step_model_output"), Some(i)),
                    t as usize,
                    sample,
                    fx.item(&format!("{name}/step_variance_noise"), Some(i)),
                )
                .unwrap();
            let expected = fx.item(&format!("{name}/step_prev_sample"), Some(i));
            assert_close(
                &format!("{name} step(t={t})"),
                prev,
                expected,
                input_scale,
                TENSOR_TOL,
            );
        }
    }
}

#[test]
fn ddpm_training_target_follows_prediction_type() {
    let device = Default::default();
    let latents = Tensor::<B, 4>::ones([2, 4, 2, 2], &device);
    let noise = Tensor::<B, 4>::ones([2, 4, 2, 2], &device).mul_scalar(2.0);
    let eps = Ddpm::new(&json!({})).unwrap();
    assert_eq!(
        diff(
            eps.training_target(latents.clone(), noise.clone(), &[0, 999]),
            noise.clone()
        ),
        0.0
    );
    let v = Ddpm::new(&json!({"prediction_type": "v_prediction"})).unwrap();
    let expected = v.velocity(latents.clone(), noise.clone(), &[0, 999]);
    assert_eq!(
        diff(v.training_target(latents, noise, &[0, 999]), expected),
        0.0
    );
}

#[test]
fn sd15_noise_schedule() {
    // fine-tuning.md: betas = linspace(sqrt(0.00085), sqrt(0.012), 1000)^2.
    let sd15 = json!({"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"});
    let ddpm = Ddpm::new(&sd15).unwrap();
    assert_eq!(ddpm.num_train_timesteps(), 1000);
    assert!((ddpm.betas()[0] - 0.00085).abs() < 1e-9);
    assert!((ddpm.betas()[999] - 0.012).abs() < 1e-9);
    assert!((ddpm.alphas_cumprod()[999] - 0.004_660_9).abs() < 1e-6);
}

/// Re-running a multistep scheduler from step 0 must not reuse the previous trajectory.
#[test]
fn dpm_solver_restarts_cleanly() {
    let fx = load();
    let name = "dpmpp2m_sd15_10";
    let case = fx.cases["trajectories"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap();
    let mut scheduler =
        build_scheduler::<B>(SchedulerKind::DpmPlusPlus2M, &case["config"], 10).unwrap();
    let mut finals = Vec::new();
    for _ in 0..2 {
        let mut sample: Tensor<B, 4> = fx.item(&format!("{name}/sample"), None);
        for i in 0..10 {
            sample = scheduler.step(fx.item(&format!("{name}/model_output"), Some(i)), i, sample);
        }
        finals.push(sample);
    }
    let second = finals.pop().unwrap();
    // Bit-equal on the CPU; CUDA's fused kernels may round differently between runs
    // (4.8e-6 seen on an H200), far below what a reused history would change.
    let d = diff(finals.pop().unwrap(), second);
    assert!(d <= common::tolerance(0.0), "the rerun differs by {d:e}");
}

fn build_err(kind: SchedulerKind, config: Value, steps: usize) -> String {
    match build_scheduler::<B>(kind, &config, steps) {
        Ok(_) => panic!("{kind} accepted {config} with {steps} steps"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn unknown_values_are_errors_naming_the_field() {
    for kind in [
        SchedulerKind::Ddim,
        SchedulerKind::Euler,
        SchedulerKind::DpmPlusPlus2M,
    ] {
        let msg = build_err(kind, json!({"beta_schedule": "cosine"}), 10);
        assert!(
            msg.contains("beta_schedule") && msg.contains("cosine"),
            "{msg}"
        );
        let msg = build_err(kind, json!({"timestep_spacing": "uniform"}), 10);
        assert!(
            msg.contains("timestep_spacing") && msg.contains("uniform"),
            "{msg}"
        );
        let msg = build_err(kind, json!({"prediction_type": "flow_prediction"}), 10);
        assert!(
            msg.contains("prediction_type") && msg.contains("flow_prediction"),
            "{msg}"
        );
        let msg = build_err(kind, json!({"beta_start": "small"}), 10);
        assert!(
            msg.contains("beta_start") && msg.contains("number"),
            "{msg}"
        );
        let msg = build_err(kind, json!({}), 0);
        assert!(msg.contains("num_inference_steps"), "{msg}");
        let msg = build_err(kind, json!({}), 1001);
        assert!(msg.contains("num_inference_steps"), "{msg}");
        let msg = build_err(kind, json!({"trained_betas": [0.1, 0.2]}), 10);
        assert!(msg.contains("trained_betas"), "{msg}");
        let msg = build_err(kind, json!([1, 2]), 10);
        assert!(msg.contains("JSON object"), "{msg}");
    }
    let err = Ddpm::new(&json!({"beta_schedule": "sigmoid"})).unwrap_err();
    assert!(
        matches!(
            err,
            SchedulerError::Unsupported {
                field: "beta_schedule",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("sigmoid"));
}

#[test]
fn unimplemented_options_are_refused() {
    let cases = [
        (
            SchedulerKind::Euler,
            json!({"use_exponential_sigmas": true}),
            "use_exponential_sigmas",
        ),
        (
            SchedulerKind::Euler,
            json!({"interpolation_type": "log_linear"}),
            "interpolation_type",
        ),
        (
            SchedulerKind::Euler,
            json!({"prediction_type": "v_prediction", "timestep_type": "continuous"}),
            "timestep_type",
        ),
        (
            SchedulerKind::DpmPlusPlus2M,
            json!({"use_lu_lambdas": true}),
            "use_lu_lambdas",
        ),
        (
            SchedulerKind::DpmPlusPlus2M,
            json!({"use_karras_sigmas": "yes"}),
            "use_karras_sigmas",
        ),
        (
            SchedulerKind::DpmPlusPlus2M,
            json!({"algorithm_type": "sde-dpmsolver++"}),
            "algorithm_type",
        ),
        (
            SchedulerKind::DpmPlusPlus2M,
            json!({"solver_order": 4}),
            "solver_order",
        ),
        (
            SchedulerKind::DpmPlusPlus2M,
            json!({"final_sigmas_type": "denoised"}),
            "final_sigmas_type",
        ),
        (
            SchedulerKind::DpmPlusPlus2M,
            json!({"solver_type": "bogus"}),
            "solver_type",
        ),
        (
            SchedulerKind::Ddim,
            json!({"thresholding": true}),
            "thresholding",
        ),
        // leading + steps_offset 1 with 1000 steps reaches timestep 1000 (diffusers: IndexError)
        (
            SchedulerKind::Ddim,
            json!({"steps_offset": 1}),
            "out of range",
        ),
    ];
    for (kind, config, needle) in cases {
        let steps = if needle == "out of range" { 1000 } else { 10 };
        let msg = build_err(kind, config, steps);
        assert!(msg.contains(needle), "{msg}");
    }
}

#[test]
fn fields_other_classes_use_are_ignored() {
    // What from_config does with e.g. PNDM's `skip_prk_steps` or DDIM's `clip_sample` in
    // an Euler config: ignore them.
    let config = json!({
        "_class_name": "PNDMScheduler", "skip_prk_steps": true, "clip_sample": true,
        "set_alpha_to_one": false, "trained_betas": null, "use_karras_sigmas": null,
        "lambda_min_clipped": "-Infinity"
    });
    for kind in [
        SchedulerKind::Ddim,
        SchedulerKind::Euler,
        SchedulerKind::DpmPlusPlus2M,
    ] {
        build_scheduler::<B>(kind, &config, 20).unwrap();
    }
}

#[test]
fn kind_names_round_trip() {
    for kind in [
        SchedulerKind::Ddim,
        SchedulerKind::Euler,
        SchedulerKind::DpmPlusPlus2M,
    ] {
        assert_eq!(kind.to_string().parse::<SchedulerKind>().unwrap(), kind);
    }
    assert_eq!(
        "dpmpp2m".parse::<SchedulerKind>().unwrap(),
        SchedulerKind::DpmPlusPlus2M
    );
    let msg = "pndm".parse::<SchedulerKind>().unwrap_err().to_string();
    assert!(msg.contains("pndm") && msg.contains("dpmpp2m"), "{msg}");
}
