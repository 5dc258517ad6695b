//! What this machine offers: GPUs (model and memory, read from `nvidia-smi` where it
//! is installed) and the host name.

use std::process::Command;

use atelier_proto::v1::Gpu;

/// GPUs as `nvidia-smi` reports them; empty when it is absent or fails.
pub fn detect_gpus() -> Vec<Gpu> {
    let out = Command::new("nvidia-smi")
        .args([
            "--query-gpu=index,name,memory.total",
            "--format=csv,noheader,nounits",
        ])
        .output();
    match out {
        Ok(o) if o.status.success() => parse_nvidia_smi(&String::from_utf8_lossy(&o.stdout)),
        _ => Vec::new(),
    }
}

/// Parses `index, name, memory.total [MiB]` lines.
pub fn parse_nvidia_smi(text: &str) -> Vec<Gpu> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.split(',').map(str::trim);
            let index = parts.next()?.parse().ok()?;
            let name = parts.next()?.to_string();
            let mib: f64 = parts.next()?.parse().ok()?;
            Some(Gpu {
                index,
                name,
                memory_gb: (mib / 1024.0 * 10.0).round() / 10.0,
            })
        })
        .collect()
}

/// The GPUs a worker registers: those named with `--gpus` (all detected ones when
/// none are named). A named GPU that cannot be read is kept with `fallback_gb`.
pub fn select_gpus(
    wanted: Option<&[u32]>,
    detected: &[Gpu],
    fallback_gb: f64,
) -> Result<Vec<Gpu>, String> {
    match wanted {
        None => Ok(detected.to_vec()),
        Some(list) => list
            .iter()
            .map(|&i| match detected.iter().find(|g| g.index == i) {
                Some(g) => Ok(g.clone()),
                None if detected.is_empty() => Ok(Gpu {
                    index: i,
                    name: "unknown GPU".into(),
                    memory_gb: fallback_gb,
                }),
                None => Err(format!(
                    "GPU {i} does not exist here (nvidia-smi lists {})",
                    detected
                        .iter()
                        .map(|g| g.index.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            })
            .collect(),
    }
}

pub fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "worker".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_nvidia_smi_lines() {
        let gpus = parse_nvidia_smi(
            "0, NVIDIA H100 80GB HBM3, 81559\n1, NVIDIA GeForce RTX 4090, 24564\n",
        );
        assert_eq!(gpus.len(), 2);
        assert_eq!(gpus[0].name, "NVIDIA H100 80GB HBM3");
        assert_eq!(gpus[0].memory_gb, 79.6);
        assert_eq!(gpus[1].index, 1);
        assert_eq!(gpus[1].memory_gb, 24.0);
    }

    #[test]
    fn selects_named_gpus() {
        let detected = parse_nvidia_smi("0, A, 1024\n1, B, 2048\n");
        assert_eq!(
            select_gpus(Some(&[1]), &detected, 0.0).unwrap()[0].name,
            "B"
        );
        assert!(select_gpus(Some(&[3]), &detected, 0.0)
            .unwrap_err()
            .contains("GPU 3 does not exist"));
        assert_eq!(
            select_gpus(Some(&[0]), &[], 24.0).unwrap()[0].memory_gb,
            24.0
        );
    }
}
