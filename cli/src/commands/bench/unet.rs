//! `atelier bench unet`: the UNet forward on the CPU, atelier (burn's NdArray backend)
//! beside PyTorch (diffusers) on the same random weights and the same inputs, in one
//! run.
//!
//! For each config the UNet is built with seeded random weights and written as a
//! diffusers folder (`config.json` + `diffusion_pytorch_model.safetensors`) together
//! with `inputs.safetensors`; atelier's forward is timed here, then
//! `tools/bench/unet_forward.py` (compiled into the binary, written next to the
//! weights) loads the folder with diffusers and times the same inputs. Besides the
//! times, the largest difference between the two noise predictions is printed: a
//! slow-but-wrong or fast-but-wrong side shows up in the same table.
//!
//! Threads: both sides get the same count, `--threads` or every core: rayon's pool
//! (burn-ndarray is built with `multi-threads`) through `RAYON_NUM_THREADS`, set
//! before the first forward starts it, and `torch.set_num_threads` for PyTorch.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use atelier_sd::backend::Cpu;
use atelier_sd::unet_2d::UNet2DConditionConfig;
use atelier_sd::weights::{save_module, SafetensorsFile};
use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use super::percentile;
use crate::error::{CliError, CliResult};
use crate::settings::Settings;

/// Configs known by name; anything else is a path to a `config.json` or its folder.
const NAMED_CONFIGS: [(&str, &str); 3] = [
    (
        "tiny",
        include_str!("../../../../worker/sd/tests/fixtures/tiny-sd/unet/config.json"),
    ),
    (
        "medium",
        include_str!("../../../../worker/sd/configs/bench-medium/unet/config.json"),
    ),
    (
        "sd15",
        include_str!("../../../../worker/sd/configs/sd15/unet/config.json"),
    ),
];

const SCRIPT: &str = include_str!("../../../../tools/bench/unet_forward.py");

/// Text-encoder sequence length of SD1.x: the context is [batch, 77, cross_attention_dim].
const CONTEXT_LEN: usize = 77;

#[derive(clap::Args, Debug)]
pub struct UnetArgs {
    /// UNet configs: tiny, medium, sd15, or paths to a diffusers unet config.json (or its folder)
    #[arg(long, value_delimiter = ',', default_values_t = ["tiny".to_string(), "medium".to_string()])]
    pub configs: Vec<String>,
    /// Samples per forward
    #[arg(long, default_value_t = 2)]
    pub batch: usize,
    /// Timed forwards per side
    #[arg(long, default_value_t = 5)]
    pub iters: usize,
    /// Untimed forwards before them
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Latent height and width (default: the config's sample_size)
    #[arg(long)]
    pub size: Option<usize>,
    /// Python with torch and diffusers (see tools/bench/unet_forward.py); without one,
    /// only atelier's side runs
    #[arg(long, env = "ATELIER_PYTHON", value_name = "PATH")]
    pub python: Option<PathBuf>,
    /// Threads for both sides: burn's rayon pool (RAYON_NUM_THREADS) and
    /// torch.set_num_threads (default: every core)
    #[arg(long)]
    pub threads: Option<usize>,
    /// Seed of the random weights and inputs
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Keep the weights, inputs and outputs here instead of a temporary folder
    #[arg(long, value_name = "DIR")]
    pub keep: Option<PathBuf>,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Timing {
    median_ms: f64,
    p90_ms: f64,
    times_ms: Vec<f64>,
    threads: usize,
}

#[derive(Debug, Serialize)]
struct PyTorchTiming {
    median_ms: f64,
    p90_ms: f64,
    times_ms: Vec<f64>,
    threads: usize,
    interop_threads: usize,
    params: u64,
    torch: String,
    diffusers: String,
}

#[derive(Debug, Serialize)]
struct Row {
    config: String,
    params: usize,
    latent: [usize; 2],
    batch: usize,
    atelier: Timing,
    pytorch: Option<PyTorchTiming>,
    /// atelier median / PyTorch median
    ratio: Option<f64>,
    /// max |atelier - PyTorch| over the noise prediction
    max_abs_diff: Option<f64>,
    /// max |PyTorch|, the scale `max_abs_diff` compares to
    max_abs_out: Option<f64>,
}

impl UnetArgs {
    pub async fn exec(self, _settings: Settings) -> CliResult {
        tokio::task::spawn_blocking(move || self.run())
            .await
            .map_err(|e| CliError::failure(format!("the benchmark panicked: {e}")))?
    }

    fn run(self) -> CliResult {
        if self.iters == 0 || self.batch == 0 {
            return Err(CliError::invalid("--iters and --batch must be at least 1"));
        }
        if self.threads == Some(0) {
            return Err(CliError::invalid("--threads must be at least 1"));
        }
        let configs = self
            .configs
            .iter()
            .map(|c| resolve_config(c))
            .collect::<CliResult<Vec<_>>>()?;
        let python = self.python.clone().filter(|p| !p.as_os_str().is_empty());
        if python.is_none() {
            eprintln!(
                "note: no Python given (--python or ATELIER_PYTHON): timing atelier only. \
                 tools/bench/unet_forward.py says how to make a venv with torch and diffusers."
            );
        }
        let threads = self.threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        });
        // Read by rayon when its global pool starts (the first parallel op), so it
        // must be set before the first forward.
        for var in ["RAYON_NUM_THREADS", "MATMUL_NUM_THREADS"] {
            std::env::set_var(var, threads.to_string());
        }
        let temp;
        let root = match &self.keep {
            Some(dir) => dir.clone(),
            None => {
                temp = tempfile::Builder::new()
                    .prefix("atelier-bench-unet-")
                    .tempdir()?;
                temp.path().to_path_buf()
            }
        };
        let script = root.join("unet_forward.py");
        if python.is_some() {
            std::fs::create_dir_all(&root)?;
            std::fs::write(&script, SCRIPT)?;
        }

        let progress = Progress::new();
        let mut rows = Vec::new();
        for (label, text) in &configs {
            let dir = root.join(label);
            let row = self.bench_one(
                label,
                text,
                &dir,
                python.as_deref().map(|p| (p, script.as_path())),
                threads,
                &progress,
            )?;
            rows.push(row);
        }
        progress.finish();

        if self.json {
            crate::output::print_json(&rows);
        } else {
            print_table(&rows);
        }
        Ok(())
    }

    fn bench_one(
        &self,
        label: &str,
        config_text: &str,
        dir: &Path,
        python: Option<(&Path, &Path)>,
        threads: usize,
        progress: &Progress,
    ) -> CliResult<Row> {
        let failure = |e: atelier_sd::SdError| CliError::failure(format!("{label}: {e}"));
        std::fs::create_dir_all(dir)?;
        let config_path = dir.join("config.json");
        std::fs::write(&config_path, config_text)?;
        let config = UNet2DConditionConfig::from_file(&config_path)
            .map_err(|e| CliError::invalid(e.to_string()))?;
        let size = self.size.or(config.sample_size).unwrap_or(64);
        let cross = config
            .cross_attention_dim
            .expand(config.block_out_channels.len(), "cross_attention_dim")
            .map_err(|m| CliError::invalid(format!("{label}: {m}")))?[0];

        // 1. the model, seeded random weights, written the way diffusers reads them
        progress.step(format!(
            "{label}: building the UNet and writing its weights"
        ));
        let device = Default::default();
        Cpu::seed(&device, self.seed);
        let unet = config.init::<Cpu>(&device).map_err(failure)?;
        save_module(
            &unet,
            &dir.join("diffusion_pytorch_model.safetensors"),
            false,
        )
        .map_err(failure)?;
        let params = unet.num_params();

        // 2. the inputs, the same for both sides
        let b = self.batch;
        let sample = Tensor::<Cpu, 4>::random(
            [b, config.in_channels, size, size],
            Distribution::Normal(0.0, 1.0),
            &device,
        );
        let context = Tensor::<Cpu, 3>::random(
            [b, CONTEXT_LEN, cross],
            Distribution::Normal(0.0, 1.0),
            &device,
        );
        // Spread over the schedule: b = 2 gives [999, 499].
        let timesteps: Vec<f64> = (0..b)
            .map(|i| 999.0 - (i as f64 * 1000.0 / b as f64).round())
            .collect();
        let inputs = dir.join("inputs.safetensors");
        write_inputs(&inputs, &sample, &timesteps, &context)?;

        // 3. atelier's forward
        let total = self.warmup + self.iters;
        let mut times = Vec::with_capacity(self.iters);
        let mut out = None;
        for i in 0..total {
            progress.step(format!(
                "{label}: atelier forward {}/{total}{}",
                i + 1,
                if i < self.warmup { " (warm-up)" } else { "" }
            ));
            let t0 = Instant::now();
            let y = unet.forward(sample.clone(), &timesteps, &context);
            Cpu::sync(&device).map_err(|e| CliError::failure(format!("{e:?}")))?;
            let elapsed = t0.elapsed();
            if i >= self.warmup {
                times.push(ms(elapsed));
            }
            out = Some(y);
        }
        let out = out.expect("at least one forward");
        let out_shape = out.dims().to_vec();
        let out_values = out
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .map_err(|e| CliError::failure(format!("{e:?}")))?;
        let atelier = timing(times, threads);

        // 4. PyTorch's forward on the same folder and inputs
        let (pytorch, max_abs_diff, max_abs_out) = match python {
            None => (None, None, None),
            Some((python, script)) => {
                progress.step(format!(
                    "{label}: PyTorch forward x{total} (diffusers, in a subprocess)"
                ));
                let torch_threads = threads;
                let out_path = dir.join("pytorch_out.safetensors");
                let py = run_python(
                    python,
                    script,
                    dir,
                    &inputs,
                    self.iters,
                    self.warmup,
                    torch_threads,
                    &out_path,
                )?;
                let file = SafetensorsFile::open(&out_path).map_err(failure)?;
                let (shape, reference) = file.read_f32("out").map_err(failure)?;
                if shape != out_shape {
                    return Err(CliError::failure(format!(
                        "{label}: atelier's output has shape {out_shape:?}, PyTorch's {shape:?}"
                    )));
                }
                let diff = out_values
                    .iter()
                    .zip(&reference)
                    .map(|(a, b)| (a - b).abs() as f64)
                    .fold(0.0, f64::max);
                let scale = reference.iter().map(|v| v.abs() as f64).fold(0.0, f64::max);
                (Some(py), Some(diff), Some(scale))
            }
        };
        let ratio = pytorch.as_ref().map(|p| atelier.median_ms / p.median_ms);
        Ok(Row {
            config: label.to_string(),
            params,
            latent: [size, size],
            batch: b,
            atelier,
            pytorch,
            ratio,
            max_abs_diff,
            max_abs_out,
        })
    }
}

/// (label, config.json text) for a name or a path.
fn resolve_config(name: &str) -> CliResult<(String, String)> {
    if let Some((n, text)) = NAMED_CONFIGS.iter().find(|(n, _)| *n == name) {
        return Ok((n.to_string(), text.to_string()));
    }
    let mut path = PathBuf::from(name);
    if path.is_dir() {
        path = path.join("config.json");
    }
    if !path.is_file() {
        let names: Vec<&str> = NAMED_CONFIGS.iter().map(|(n, _)| *n).collect();
        return Err(CliError::invalid(format!(
            "--configs: `{name}` is neither a known config ({}) nor a config.json file or folder",
            names.join(", ")
        )));
    }
    let text = std::fs::read_to_string(&path)?;
    // A folder name that says what it is: `.../my-model/unet/config.json` -> `my-model-unet`.
    let label = path
        .parent()
        .into_iter()
        .flat_map(|p| p.iter().rev().take(2).collect::<Vec<_>>().into_iter().rev())
        .map(|c| c.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("-");
    let label = if label.is_empty() {
        "config".to_string()
    } else {
        label
    };
    Ok((label, text))
}

fn write_inputs(
    path: &Path,
    sample: &Tensor<Cpu, 4>,
    timesteps: &[f64],
    context: &Tensor<Cpu, 3>,
) -> CliResult {
    fn bytes<const D: usize>(t: &Tensor<Cpu, D>) -> CliResult<(Vec<usize>, Vec<u8>)> {
        let data = t.to_data().convert::<f32>();
        let shape = data.shape.to_vec();
        let values = data
            .into_vec::<f32>()
            .map_err(|e| CliError::failure(format!("{e:?}")))?;
        Ok((shape, values.iter().flat_map(|v| v.to_le_bytes()).collect()))
    }
    let tensors = [
        ("sample", bytes(sample)?),
        (
            "timesteps",
            (
                vec![timesteps.len()],
                timesteps
                    .iter()
                    .flat_map(|t| (*t as f32).to_le_bytes())
                    .collect(),
            ),
        ),
        ("encoder_hidden_states", bytes(context)?),
    ];
    let views = tensors
        .iter()
        .map(|(name, (shape, data))| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data)
                .map(|v| (name.to_string(), v))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CliError::failure(e.to_string()))?;
    safetensors::serialize_to_file(views, None, path)
        .map_err(|e| CliError::failure(format!("{}: {e}", path.display())))
}

#[allow(clippy::too_many_arguments)]
fn run_python(
    python: &Path,
    script: &Path,
    unet_dir: &Path,
    inputs: &Path,
    iters: usize,
    warmup: usize,
    threads: usize,
    out: &Path,
) -> CliResult<PyTorchTiming> {
    let output = Command::new(python)
        .arg(script)
        .arg("--unet")
        .arg(unet_dir)
        .arg("--inputs")
        .arg(inputs)
        .args(["--iters", &iters.to_string()])
        .args(["--warmup", &warmup.to_string()])
        .args(["--threads", &threads.to_string()])
        .arg("--out")
        .arg(out)
        .output()
        .map_err(|e| CliError::failure(format!("cannot run {}: {e}", python.display())))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        let tail: Vec<&str> = stderr.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(CliError::failure(format!(
            "the PyTorch side failed ({}, {}):\n{}",
            python.display(),
            output.status,
            tail.join("\n")
        )));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    let v: serde_json::Value = serde_json::from_str(last).map_err(|e| {
        CliError::failure(format!(
            "the PyTorch side printed no JSON result ({e}): `{last}`"
        ))
    })?;
    let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    let u = |k: &str| v[k].as_u64().unwrap_or(0);
    let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
    Ok(PyTorchTiming {
        median_ms: f("median_ms"),
        p90_ms: f("p90_ms"),
        times_ms: v["times_ms"]
            .as_array()
            .map(|a| a.iter().filter_map(|x| x.as_f64()).collect())
            .unwrap_or_default(),
        threads: u("threads") as usize,
        interop_threads: u("interop_threads") as usize,
        params: u("params"),
        torch: s("torch"),
        diffusers: s("diffusers"),
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Median (the mean of the middle two for an even count, as Python's
/// `statistics.median`) and nearest-rank p90.
fn timing(times_ms: Vec<f64>, threads: usize) -> Timing {
    let mut sorted = times_ms.clone();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median_ms = if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    };
    Timing {
        median_ms,
        p90_ms: percentile(&sorted, 0.9),
        times_ms,
        threads,
    }
}

fn print_table(rows: &[Row]) {
    let mut t = crate::output::table(&[
        "config",
        "params",
        "latent",
        "batch",
        "atelier median / p90 ms",
        "PyTorch median / p90 ms",
        "ratio",
        "max |Δ| (max |out|)",
    ]);
    for r in rows {
        t.add_row(vec![
            r.config.clone(),
            params(r.params),
            format!("{}x{}", r.latent[0], r.latent[1]),
            r.batch.to_string(),
            format!("{:.1} / {:.1}", r.atelier.median_ms, r.atelier.p90_ms),
            r.pytorch
                .as_ref()
                .map(|p| format!("{:.1} / {:.1}", p.median_ms, p.p90_ms))
                .unwrap_or_else(|| "-".into()),
            r.ratio
                .map(|x| format!("{x:.2}x"))
                .unwrap_or_else(|| "-".into()),
            match (r.max_abs_diff, r.max_abs_out) {
                (Some(d), Some(o)) => format!("{d:.1e} ({o:.2})"),
                _ => "-".into(),
            },
        ]);
    }
    println!("{t}");
    let atelier_threads = rows.first().map(|r| r.atelier.threads).unwrap_or(1);
    println!(
        "threads: atelier {atelier_threads} (burn NdArray<f32>, rayon pool), {}",
        match rows.iter().find_map(|r| r.pytorch.as_ref()) {
            Some(p) => format!(
                "PyTorch {} (torch.get_num_threads; interop {}; torch {}, diffusers {})",
                p.threads, p.interop_threads, p.torch, p.diffusers
            ),
            None => "PyTorch not run".into(),
        }
    );
    if let Some(p) = rows.iter().find_map(|r| r.pytorch.as_ref()) {
        if p.threads != atelier_threads {
            println!(
                "note: the two sides ran on different thread counts; --threads {atelier_threads} \
                 compares like with like"
            );
        }
    }
    println!("ratio = atelier median / PyTorch median (above 1: atelier is slower); f32, no grad");
}

/// `1.2M`, `860.1M`, `35.4K`.
fn params(n: usize) -> String {
    let n = n as f64;
    if n >= 1e9 {
        format!("{:.2}B", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.1}M", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.1}K", n / 1e3)
    } else {
        format!("{n}")
    }
}

/// Phases on stderr: a spinner on a terminal, one line each otherwise.
struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    fn new() -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Progress { bar }
    }

    fn step(&self, message: String) {
        match &self.bar {
            Some(bar) => bar.set_message(message),
            None => eprintln!("bench unet: {message}"),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_p90_follow_python() {
        let t = timing(vec![4.0, 1.0, 3.0, 2.0], 1);
        assert_eq!(t.median_ms, 2.5);
        assert_eq!(t.p90_ms, 4.0);
        let t = timing(vec![5.0, 1.0, 3.0], 1);
        assert_eq!(t.median_ms, 3.0);
    }

    #[test]
    fn named_configs_parse() {
        for (name, text) in NAMED_CONFIGS {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("config.json");
            std::fs::write(&path, text).unwrap();
            UNet2DConditionConfig::from_file(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn a_folder_config_is_labelled_by_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let unet = dir.path().join("my-model/unet");
        std::fs::create_dir_all(&unet).unwrap();
        std::fs::write(unet.join("config.json"), NAMED_CONFIGS[0].1).unwrap();
        let (label, _) = resolve_config(unet.to_str().unwrap()).unwrap();
        assert_eq!(label, "my-model-unet");
        assert!(resolve_config("no-such-config").is_err());
    }
}
