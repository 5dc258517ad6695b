//! Mixed precision without autocast: burn 0.21 has none, so the dtypes are chosen
//! here. Frozen weights are cast to f16/bf16 once; activations follow the weights'
//! dtype; norms run in f32 (as under PyTorch's autocast, and because burn's
//! composed group norm overflows in f16); LoRA adapters, their gradients, the
//! optimizer state and the loss stay in f32.

use std::str::FromStr;

use burn::module::{Module, ModuleMapper, Param};
use burn::nn::{GroupNorm, LayerNorm};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, FloatDType, Tensor};
use serde::{Deserialize, Serialize};

use crate::weights::PathStack;

/// The dtype of the frozen weights during training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    Bf16,
    F16,
}

impl Precision {
    pub fn dtype(self) -> FloatDType {
        match self {
            Precision::F32 => FloatDType::F32,
            Precision::Bf16 => FloatDType::BF16,
            Precision::F16 => FloatDType::F16,
        }
    }
}

impl FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "f32" | "no" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            "f16" | "fp16" => Ok(Precision::F16),
            other => Err(format!("unknown precision `{other}` (f32, bf16 or f16)")),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::F16 => "f16",
        })
    }
}

/// Module types whose parameters keep f32 whatever the frozen dtype: norms (run in
/// f32, see [`NormF32`]) and the trainable LoRA adapters.
const KEPT_F32: [&str; 3] = ["Struct:GroupNorm", "Struct:LayerNorm", "Struct:LoraAdapter"];

struct CastFrozen {
    dtype: FloatDType,
    stack: PathStack,
}

impl<B: Backend> ModuleMapper<B> for CastFrozen {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.stack.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.exit();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let keep = self.stack.within(&KEPT_F32);
        let (id, tensor, mapper) = param.consume();
        let tensor = if keep {
            tensor
        } else {
            tensor.cast(self.dtype)
        };
        Param::from_mapped_value(id, tensor, mapper)
    }
}

/// Casts every float parameter of `module` to `dtype`, except those of norms and
/// LoRA adapters. Parameter ids are kept (the optimizer's state is keyed by them).
pub fn cast_frozen<B: Backend, M: Module<B>>(module: M, dtype: FloatDType) -> M {
    module.map(&mut CastFrozen {
        dtype,
        stack: PathStack::default(),
    })
}

/// The dtype of a module's compute: that of one of its frozen weights.
pub fn param_dtype<B: Backend, const D: usize>(param: &Param<Tensor<B, D>>) -> FloatDType {
    param.val().dtype().into()
}

/// Runs `f` on `x` in f32 and returns the result in `x`'s dtype.
pub fn in_f32<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    f: impl FnOnce(Tensor<B, D>) -> Tensor<B, D>,
) -> Tensor<B, D> {
    let dtype: DType = x.dtype();
    f(x.cast(FloatDType::F32)).cast(dtype)
}

/// Norms computed in f32 on activations of any dtype.
pub trait NormF32<B: Backend> {
    fn forward_f32<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D>;
}

impl<B: Backend> NormF32<B> for GroupNorm<B> {
    fn forward_f32<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        in_f32(x, |x| self.forward(x))
    }
}

impl<B: Backend> NormF32<B> for LayerNorm<B> {
    fn forward_f32<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        in_f32(x, |x| self.forward(x))
    }
}
