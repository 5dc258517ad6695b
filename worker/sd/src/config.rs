//! Reading a component's `config.json`.
//!
//! Configs are plain serde structs; fields that diffusers also accepts under another
//! meaning say so where they are declared. Unknown fields are ignored, as diffusers
//! does, but values atelier cannot honour are refused by each model's `validate`.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::error::{Result, SdError};

pub fn read_json<T: DeserializeOwned>(path: &Path, what: &'static str) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| SdError::io(path, e))?;
    parse_json(&text).map_err(|source| SdError::Json {
        path: path.to_path_buf(),
        what,
        source,
    })
}

/// Parses JSON as Python's `json` writes it: diffusers saves `-Infinity` (for
/// example DPM-Solver's `lambda_min_clipped`), which strict JSON lacks. Such values
/// become `null`, which every config reader takes as "use the default".
pub fn parse_json<T: DeserializeOwned>(text: &str) -> serde_json::Result<T> {
    match serde_json::from_str(text) {
        Ok(value) => Ok(value),
        Err(first) => {
            let cleaned = python_constants().replace_all(text, "${1}null");
            if cleaned == text {
                return Err(first);
            }
            serde_json::from_str(&cleaned)
        }
    }
}

fn python_constants() -> &'static regex::Regex {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    // Only bare values after `:`, `[` or `,`: the same words inside strings stay.
    RE.get_or_init(|| regex::Regex::new(r"([:\[,]\s*)(-?Infinity|NaN)").unwrap())
}

/// A value given once for all blocks or once per block, as diffusers allows for
/// `attention_head_dim`, `layers_per_block`, `cross_attention_dim`, …
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(untagged)]
pub enum PerBlock<T> {
    One(T),
    Each(Vec<T>),
}

impl<T: Clone> PerBlock<T> {
    /// The value for each of `n` blocks; a list of the wrong length is an error
    /// naming `field`.
    pub fn expand(&self, n: usize, field: &str) -> std::result::Result<Vec<T>, String> {
        match self {
            PerBlock::One(value) => Ok(vec![value.clone(); n]),
            PerBlock::Each(values) if values.len() == n => Ok(values.clone()),
            PerBlock::Each(values) => Err(format!(
                "`{field}` has {} entries but there are {n} blocks",
                values.len()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_infinity_reads_as_null() {
        let v: serde_json::Value =
            parse_json(r#"{"lambda_min_clipped": -Infinity, "name": "-Infinity", "x": [NaN]}"#)
                .unwrap();
        assert!(v["lambda_min_clipped"].is_null());
        assert_eq!(v["name"], "-Infinity");
        assert!(v["x"][0].is_null());
    }

    #[test]
    fn per_block_lists_must_match_the_block_count() {
        assert_eq!(PerBlock::One(8).expand(3, "f").unwrap(), vec![8, 8, 8]);
        assert!(PerBlock::Each(vec![1, 2])
            .expand(3, "attention_head_dim")
            .unwrap_err()
            .contains("`attention_head_dim` has 2 entries"));
    }
}
