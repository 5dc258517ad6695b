//! Checkpoints a run can resume from, bit for bit: beside the method's own file
//! (the LoRA or the embeddings), `optimizer.safetensors` holds AdamW's moments per
//! trainable parameter and `state.json` the step, the generator's position, the
//! remaining example order and the losses so far.

use std::collections::HashMap;
use std::path::Path;

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::config::read_json;
use crate::error::{Result, SdError};
use crate::train::adamw::{AdamW, Moments};
use crate::weights::{write_f32_safetensors, PathStack, SafetensorsFile};

pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const STATE_FILE: &str = "state.json";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Steps done.
    pub step: usize,
    pub optimizer_steps: u64,
    pub rng_seed: u64,
    /// ChaCha's word position (a u128, as a decimal string for JSON).
    pub rng_word_pos: String,
    /// Examples still to visit in this epoch (popped from the end).
    pub order: Vec<usize>,
    pub losses: Vec<f64>,
    /// The run's settings: a resume with other settings is refused.
    pub config: crate::train::config::TrainConfig,
}

/// Module path and id of every parameter.
struct Ids {
    stack: PathStack,
    ids: Vec<(String, ParamId)>,
}

impl<B: Backend> ModuleVisitor<B> for Ids {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.stack.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.exit();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.ids.push((self.stack.torch_name().0, param.id));
    }
}

fn param_ids<B: Backend, M: Module<B>>(module: &M) -> Vec<(String, ParamId)> {
    let mut ids = Ids {
        stack: PathStack::default(),
        ids: Vec::new(),
    };
    module.visit(&mut ids);
    ids.ids
}

/// Writes the optimizer's moments for `module`'s parameters and the run's state.
pub fn save<B: AutodiffBackend, M: Module<B>>(
    dir: &Path,
    module: &M,
    optimizer: &AdamW<B>,
    state: &TrainerState,
) -> Result<()> {
    let mut tensors = Vec::new();
    for (name, id) in param_ids::<B, M>(module) {
        if let Some(m) = optimizer.state.get(&id) {
            for (suffix, t) in [("exp_avg", &m.exp_avg), ("exp_avg_sq", &m.exp_avg_sq)] {
                let values: Vec<f32> = t
                    .clone()
                    .into_data()
                    .convert::<f32>()
                    .into_vec()
                    .expect("converted to f32");
                tensors.push((format!("{name}.{suffix}"), vec![values.len()], values));
            }
        }
    }
    write_f32_safetensors(&dir.join(OPTIMIZER_FILE), &tensors, &[])?;
    let path = dir.join(STATE_FILE);
    let text = serde_json::to_string_pretty(state).expect("serialisable");
    std::fs::write(&path, text).map_err(|e| SdError::io(&path, e))
}

pub fn read_state(dir: &Path) -> Result<TrainerState> {
    read_json(&dir.join(STATE_FILE), "a training checkpoint state")
}

/// Puts the saved moments back, keyed by `module`'s (new) parameter ids.
pub fn load_optimizer<B: AutodiffBackend, M: Module<B>>(
    dir: &Path,
    module: &M,
    optimizer: &mut AdamW<B>,
    state: &TrainerState,
    device: &B::Device,
) -> Result<()> {
    let file = SafetensorsFile::open(dir.join(OPTIMIZER_FILE))?;
    let ids: HashMap<String, ParamId> = param_ids::<B, M>(module).into_iter().collect();
    let mut restored = 0;
    for name in file.names().filter_map(|n| n.strip_suffix(".exp_avg")) {
        let id = ids.get(name).ok_or_else(|| SdError::Safetensors {
            path: file.path().to_path_buf(),
            message: format!("moments for `{name}`, which this model does not train"),
        })?;
        let read = |suffix: &str| -> Result<Tensor<B::InnerBackend, 1>> {
            let (_, values) = file.read_f32(&format!("{name}.{suffix}"))?;
            let n = values.len();
            Ok(Tensor::from_data(TensorData::new(values, [n]), device))
        };
        optimizer.state.insert(
            *id,
            Moments {
                exp_avg: read("exp_avg")?,
                exp_avg_sq: read("exp_avg_sq")?,
            },
        );
        restored += 1;
    }
    if restored == 0 {
        return Err(SdError::Safetensors {
            path: file.path().to_path_buf(),
            message: "holds no optimizer moments".into(),
        });
    }
    optimizer.steps = state.optimizer_steps;
    Ok(())
}
