//! Checkpoints as artifacts: `checkpoint-<step>/<file>`, one artifact per file of
//! the folder the trainer writes. A checkpoint is complete when every file it
//! needs to resume was uploaded; an attempt that died mid-upload leaves an
//! incomplete one, which is passed over.

use std::collections::BTreeMap;

use atelier_proto::v1;
use atelier_sd::train::checkpoint::{OPTIMIZER_FILE, STATE_FILE};
use atelier_sd::train::config::Method;

/// The trainer's summary beside the weights, in a checkpoint and at the end.
pub const SUMMARY_FILE: &str = "training.json";

/// The method's weights file.
pub fn weights_file(method: Method) -> &'static str {
    match method {
        Method::Lora | Method::Dreambooth => "pytorch_lora_weights.safetensors",
        Method::Ti => "learned_embeds.safetensors",
    }
}

/// The files a checkpoint of `method` must hold to resume from.
pub fn required_files(method: Method) -> [&'static str; 4] {
    [
        weights_file(method),
        SUMMARY_FILE,
        OPTIMIZER_FILE,
        STATE_FILE,
    ]
}

/// The artifact name of `file` in the checkpoint after `step`.
pub fn artifact_name(step: usize, file: &str) -> String {
    format!("checkpoint-{step}/{file}")
}

/// The step and file of a checkpoint artifact's name.
pub fn parse_name(name: &str) -> Option<(usize, &str)> {
    let (folder, file) = name.split_once('/')?;
    let step = folder.strip_prefix("checkpoint-")?.parse().ok()?;
    (!file.contains('/')).then_some((step, file))
}

/// A checkpoint whose files were all uploaded.
#[derive(Debug, Clone, PartialEq)]
pub struct Uploaded {
    pub step: usize,
    /// The artifacts of [`required_files`], in that order.
    pub files: Vec<v1::Artifact>,
}

/// The complete checkpoints among a job's artifacts, latest first. Only steps
/// before `steps` count: a run resumes from a step it has not finished.
pub fn complete(artifacts: &[v1::Artifact], method: Method, steps: usize) -> Vec<Uploaded> {
    let mut by_step: BTreeMap<usize, BTreeMap<&str, &v1::Artifact>> = BTreeMap::new();
    for a in artifacts {
        if let Some((step, file)) = parse_name(&a.name) {
            by_step.entry(step).or_default().insert(file, a);
        }
    }
    by_step
        .into_iter()
        .rev()
        .filter(|(step, _)| (1..steps).contains(step))
        .filter_map(|(step, files)| {
            let files: Option<Vec<v1::Artifact>> = required_files(method)
                .iter()
                .map(|f| files.get(f).map(|a| (*a).clone()))
                .collect();
            files.map(|files| Uploaded { step, files })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn artifact(name: &str) -> v1::Artifact {
        v1::Artifact {
            name: name.into(),
            ..Default::default()
        }
    }

    fn all(step: usize) -> Vec<v1::Artifact> {
        required_files(Method::Lora)
            .iter()
            .map(|f| artifact(&artifact_name(step, f)))
            .collect()
    }

    #[test]
    fn names_round_trip() {
        assert_eq!(
            parse_name(&artifact_name(200, "state.json")),
            Some((200, "state.json"))
        );
        for other in [
            "state.json",
            "checkpoint-x/state.json",
            "checkpoint-3/a/b",
            "ckpt-3/a",
        ] {
            assert_eq!(parse_name(other), None, "{other}");
        }
    }

    #[test]
    fn the_latest_complete_checkpoint_comes_first() {
        let mut artifacts = all(3);
        artifacts.extend(all(6));
        // Checkpoint 9: the attempt died before its state was uploaded.
        artifacts.extend(
            all(9)
                .into_iter()
                .filter(|a| !a.name.ends_with("state.json")),
        );
        artifacts.push(artifact("pytorch_lora_weights.safetensors"));
        let found = complete(&artifacts, Method::Lora, 12);
        let steps: Vec<usize> = found.iter().map(|c| c.step).collect();
        assert_eq!(steps, [6, 3]);
        assert_eq!(
            found[0].files[0].name,
            "checkpoint-6/pytorch_lora_weights.safetensors"
        );
        assert_eq!(found[0].files[3].name, "checkpoint-6/state.json");
        // A textual-inversion run needs its own weights file.
        assert!(complete(&artifacts, Method::Ti, 12).is_empty());
        // Nothing at or past the last step.
        assert_eq!(complete(&all(12), Method::Lora, 12), []);
    }
}
