//! `atelier model`: make a diffusers folder with random weights from configs (for
//! benchmarks, tests and the quick start: nothing to download), inspect a folder
//! (what it holds, how long it takes to load and how much memory that takes), and
//! fuse a LoRA into a folder.

use std::path::{Path, PathBuf};
use std::time::Instant;

use atelier_sd::backend::Cpu;
use atelier_sd::model_folder::{ModelFolder, Variant};
use atelier_sd::weights::parameter_count;

use crate::error::{CliError, CliResult};
use crate::output::{bytes, print_json, table};
use crate::settings::Settings;

#[derive(clap::Subcommand, Debug)]
pub enum Model {
    /// Write a diffusers folder with random weights from a folder of configs
    Init(InitArgs),
    /// Load a diffusers folder on the CPU; print parameters, sizes, load time and peak memory
    Inspect(InspectArgs),
    /// Merge a LoRA file into a model folder and write the result as a new folder
    Fuse(FuseArgs),
}

#[derive(clap::Args, Debug)]
pub struct FuseArgs {
    /// Diffusers model folder to start from
    pub model: PathBuf,
    /// LoRA file (diffusers, peft or kohya keys)
    #[arg(long)]
    pub lora: PathBuf,
    /// How much of the LoRA to merge (1 = as trained)
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// New folder to write (must not exist)
    #[arg(long, short)]
    pub output: PathBuf,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct InitArgs {
    /// Folder of configs: model_index.json, {unet,vae,text_encoder}/config.json,
    /// scheduler/, tokenizer/ (e.g. worker/sd/configs/sd15)
    pub configs: PathBuf,
    /// Folder to write
    #[arg(long, short)]
    pub output: PathBuf,
    /// Seed for the random weights
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Write fp16 variant files (`*.fp16.safetensors`) instead of f32
    #[arg(long)]
    pub fp16: bool,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// Diffusers model folder
    pub model: PathBuf,
    /// Prefer the fp16 variant files
    #[arg(long)]
    pub fp16: bool,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, serde::Serialize)]
struct Component {
    name: String,
    parameters: usize,
    file_bytes: u64,
    /// Bytes the parameters take once loaded (f32 on the CPU).
    loaded_bytes: u64,
    load_seconds: f64,
}

#[derive(Debug, serde::Serialize)]
struct Inspection {
    model: PathBuf,
    components: Vec<Component>,
    loaded_bytes: u64,
    /// Peak resident memory of this process (VmHWM), including the program itself.
    peak_rss_bytes: Option<u64>,
    /// Resident memory before loading (the program itself).
    baseline_rss_bytes: Option<u64>,
}

impl Model {
    pub async fn exec(self, _settings: Settings) -> CliResult {
        tokio::task::spawn_blocking(move || match self {
            Model::Init(a) => a.run(),
            Model::Inspect(a) => a.run(),
            Model::Fuse(a) => a.run(),
        })
        .await
        .map_err(|e| CliError::failure(e.to_string()))?
    }
}

impl InitArgs {
    fn run(self) -> CliResult {
        let started = Instant::now();
        let written = atelier_sd::random_model::write_random_model::<Cpu>(
            &self.configs,
            &self.output,
            self.seed,
            self.fp16,
            &Default::default(),
        )
        .map_err(|e| CliError::invalid(e.to_string()))?;
        if self.json {
            let rows: Vec<_> = written
                .iter()
                .map(|(name, params, size)| {
                    serde_json::json!({"name": name, "parameters": params, "file_bytes": size})
                })
                .collect();
            print_json(&serde_json::json!({"output": self.output, "components": rows}));
        } else {
            let mut t = table(&["component", "parameters", "file"]);
            for (name, params, size) in &written {
                t.add_row(vec![name.clone(), thousands(*params), bytes(*size)]);
            }
            println!("{t}");
            println!(
                "wrote {} in {:.1}s",
                self.output.display(),
                started.elapsed().as_secs_f64()
            );
        }
        Ok(())
    }
}

impl FuseArgs {
    fn run(self) -> CliResult {
        let started = Instant::now();
        let fused = atelier_sd::fuse::fuse_lora::<Cpu>(
            &self.model,
            &self.lora,
            self.scale,
            &self.output,
            &Default::default(),
        )
        .map_err(|e| CliError::invalid(e.to_string()))?;
        if self.json {
            print_json(&serde_json::json!({
                "output": self.output,
                "layers": fused.layers,
                "written": fused.written,
            }));
        } else {
            println!(
                "merged {} into {} layers at scale {}; wrote {} in {:.1}s",
                self.lora.display(),
                fused.layers,
                self.scale,
                self.output.display(),
                started.elapsed().as_secs_f64()
            );
        }
        Ok(())
    }
}

impl InspectArgs {
    fn run(self) -> CliResult {
        let invalid = |e: atelier_sd::SdError| CliError::invalid(e.to_string());
        let variant = if self.fp16 {
            Variant::Fp16
        } else {
            Variant::Auto
        };
        let folder = ModelFolder::open(&self.model, variant).map_err(invalid)?;
        let device = Default::default();
        let baseline = peak_rss();
        let mut components = Vec::new();
        // Kept alive to the end, so that the peak covers the whole model.
        let started = Instant::now();
        let text = folder.load_text_encoder::<Cpu>(&device).map_err(invalid)?;
        components.push(component(
            "text_encoder",
            &folder,
            parameter_count(&text),
            started,
        )?);
        let started = Instant::now();
        let unet = folder.load_unet::<Cpu>(&device).map_err(invalid)?;
        components.push(component("unet", &folder, parameter_count(&unet), started)?);
        let started = Instant::now();
        let vae = folder.load_vae::<Cpu>(&device).map_err(invalid)?;
        components.push(component("vae", &folder, parameter_count(&vae), started)?);
        let report = Inspection {
            model: self.model.clone(),
            loaded_bytes: components.iter().map(|c| c.loaded_bytes).sum(),
            components,
            peak_rss_bytes: peak_rss(),
            baseline_rss_bytes: baseline,
        };
        drop((text, unet, vae));
        if self.json {
            print_json(&report);
            return Ok(());
        }
        let mut t = table(&[
            "component",
            "parameters",
            "file",
            "loaded (f32)",
            "load time",
        ]);
        for c in &report.components {
            t.add_row(vec![
                c.name.clone(),
                thousands(c.parameters),
                bytes(c.file_bytes),
                bytes(c.loaded_bytes),
                format!("{:.1}s", c.load_seconds),
            ]);
        }
        println!("{t}");
        if let (Some(peak), Some(base)) = (report.peak_rss_bytes, report.baseline_rss_bytes) {
            println!(
                "peak memory {} ({} before loading): {:.2}x the loaded weights",
                bytes(peak),
                bytes(base),
                peak as f64 / report.loaded_bytes as f64
            );
        }
        Ok(())
    }
}

fn component(
    name: &str,
    folder: &ModelFolder,
    parameters: usize,
    started: Instant,
) -> CliResult<Component> {
    let files = folder
        .weight_files(name)
        .map_err(|e| CliError::invalid(e.to_string()))?;
    let file_bytes = files.iter().map(|f| file_size(f.path())).sum();
    Ok(Component {
        name: name.to_string(),
        parameters,
        file_bytes,
        loaded_bytes: parameters as u64 * 4,
        load_seconds: started.elapsed().as_secs_f64(),
    })
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// VmHWM from /proc (Linux); None elsewhere.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
