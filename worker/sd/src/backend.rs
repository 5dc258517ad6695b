//! The backends atelier runs on: ndarray on the CPU, and CUDA (compiled in with the
//! default `cuda` feature; it fails only at run time on a machine without a GPU).

use std::str::FromStr;

pub type Cpu = burn::backend::NdArray<f32>;
#[cfg(feature = "cuda")]
pub type Cuda = burn::backend::Cuda<f32>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    #[default]
    Cpu,
    Cuda,
}

impl FromStr for BackendKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cpu" => Ok(BackendKind::Cpu),
            "cuda" => Ok(BackendKind::Cuda),
            other => Err(format!("unknown backend `{other}` (cpu or cuda)")),
        }
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackendKind::Cpu => "cpu",
            BackendKind::Cuda => "cuda",
        })
    }
}

/// The first CUDA device, or why there is none. cubecl panics when the driver is
/// missing; that panic becomes an error here.
#[cfg(feature = "cuda")]
pub fn cuda_device(index: usize) -> Result<burn::backend::cuda::CudaDevice, String> {
    use burn::tensor::Tensor;
    // Without the kernel driver cubecl fails deep in a worker thread; say so plainly.
    #[cfg(target_os = "linux")]
    if !std::path::Path::new("/proc/driver/nvidia/version").exists() {
        return Err(format!(
            "no usable CUDA device {index}: this machine has no NVIDIA driver \
             (/proc/driver/nvidia/version is missing); use --backend cpu"
        ));
    }
    let device = burn::backend::cuda::CudaDevice::new(index);
    let probe = device.clone();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(move || {
        let t = Tensor::<Cuda, 1>::ones([1], &probe);
        t.into_data();
    });
    std::panic::set_hook(previous);
    result.map(|_| device).map_err(|panic| {
        let reason = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "the CUDA runtime failed to start".into());
        format!("no usable CUDA device {index}: {reason}")
    })
}

#[cfg(not(feature = "cuda"))]
pub fn cuda_device(_index: usize) -> Result<(), String> {
    Err("this build of atelier has no CUDA backend (built without the `cuda` feature)".into())
}
