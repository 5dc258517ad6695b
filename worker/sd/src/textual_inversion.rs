//! Textual-inversion embeddings: `learned_embeds.safetensors` (one tensor per
//! placeholder, keyed by the placeholder string, [n_vectors, hidden] or [hidden]),
//! or A1111's single `emb_params` tensor, named after the file.

use std::path::Path;

use crate::error::{Result, SdError};
use crate::weights::SafetensorsFile;

/// One placeholder and its vectors (row-major [n, hidden]).
#[derive(Debug, Clone)]
pub struct Embedding {
    pub token: String,
    pub vectors: usize,
    pub hidden: usize,
    pub values: Vec<f32>,
}

impl Embedding {
    /// The tokens the placeholder expands to, as diffusers names them:
    /// `<tok>`, `<tok>_1`, … for a multi-vector embedding.
    pub fn tokens(&self) -> Vec<String> {
        (0..self.vectors)
            .map(|i| {
                if i == 0 {
                    self.token.clone()
                } else {
                    format!("{}_{i}", self.token)
                }
            })
            .collect()
    }
}

pub fn read(path: &Path) -> Result<Vec<Embedding>> {
    let file = SafetensorsFile::open(path)?;
    let names: Vec<String> = file.names().map(str::to_string).collect();
    if names.is_empty() {
        return Err(SdError::Safetensors {
            path: path.to_path_buf(),
            message: "holds no embedding".into(),
        });
    }
    let mut out = Vec::new();
    for name in names {
        let (shape, values) = file.read_f32(&name)?;
        let (vectors, hidden) = match shape.as_slice() {
            [h] => (1, *h),
            [n, h] => (*n, *h),
            other => {
                return Err(SdError::Safetensors {
                    path: path.to_path_buf(),
                    message: format!(
                        "embedding `{name}` has shape {other:?}, expected [n_vectors, hidden]"
                    ),
                })
            }
        };
        let token = if name == "emb_params" {
            path.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or(name)
        } else {
            name
        };
        out.push(Embedding {
            token,
            vectors,
            hidden,
            values,
        });
    }
    out.sort_by(|a, b| a.token.cmp(&b.token));
    Ok(out)
}
