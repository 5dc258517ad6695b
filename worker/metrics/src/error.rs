//! The crate's error type. Messages name the file, tensor or image at fault, and a
//! missing weight file says how to get it.

use std::path::PathBuf;

use crate::lpips::LpipsNet;

pub type Result<T, E = MetricsError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("failed to read `{path}`: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{path}` is not a readable image: {message}")]
    Image { path: PathBuf, message: String },
    #[error("images differ in size: image {first_index} is {}x{}, image {other_index} is {}x{} (width x height)", .first.0, .first.1, .other.0, .other.1)]
    ImageSizes {
        first_index: usize,
        first: (u32, u32),
        other_index: usize,
        other: (u32, u32),
    },
    #[error("no {0} given")]
    Empty(&'static str),
    #[error("{}", missing_lpips(.path, *.net))]
    MissingLpipsWeights { path: PathBuf, net: LpipsNet },
    #[error(
        "CLIP model folder `{}` has no `{file}`: atelier reads a Hugging Face CLIPModel folder in \
         the layout of `openai/clip-vit-large-patch14` (config.json, model.safetensors, vocab.json \
         and merges.txt or tokenizer.json, optional preprocessor_config.json), e.g. `hf download \
         openai/clip-vit-large-patch14 config.json model.safetensors vocab.json merges.txt \
         tokenizer_config.json special_tokens_map.json preprocessor_config.json --local-dir {}`",
        .dir.display(),
        .dir.display()
    )]
    MissingClipFile { dir: PathBuf, file: &'static str },
    #[error("`{path}`: {message}")]
    Config { path: PathBuf, message: String },
    #[error("unknown LPIPS network `{0}`: expected `alex` or `vgg`")]
    UnknownNet(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Sd(#[from] atelier_sd::SdError),
    #[error(transparent)]
    Tokenizer(#[from] atelier_sd::tokenizer::TokenizerError),
}

impl MetricsError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        MetricsError::Io {
            path: path.into(),
            source,
        }
    }

    pub fn config(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        MetricsError::Config {
            path: path.into(),
            message: message.into(),
        }
    }
}

fn missing_lpips(path: &std::path::Path, net: LpipsNet) -> String {
    let (backbone, torchvision_file) = match net {
        LpipsNet::Alex => ("AlexNet", "alexnet-owt-7be5be79.pth"),
        LpipsNet::Vgg => ("VGG16", "vgg16-397923af.pth"),
    };
    format!(
        "LPIPS weights `{path}` not found: convert torchvision's {backbone} weights and the lpips \
         package's `{net}.pth` with `python tools/convert_lpips_weights.py --net {net} \
         --torchvision {torchvision_file} --lpips {net}.pth -o {path}`",
        path = path.display(),
    )
}
