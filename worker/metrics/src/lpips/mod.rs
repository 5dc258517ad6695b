//! LPIPS (Zhang et al. 2018), as the `lpips` package computes it with
//! `lpips.LPIPS(net=..., version="0.1")` in eval mode (`lpips/lpips.py`).
//!
//! Inputs in [-1, 1] at full resolution, scaling layer, backbone slices, each feature
//! unit-normalised over channels, squared difference, learned 1x1 convolution, spatial
//! mean, sum over the five layers. The weight file is the package's `state_dict()` as
//! safetensors (`tools/convert_lpips_weights.py` makes it), so the module fields are its
//! key names: `scaling_layer.shift`, `net.slice1.0.weight`, `lin0.model.1.weight`.

mod alexnet;
pub mod backbone;
mod conv;
pub mod lin;
pub mod scaling;
mod vgg;

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use atelier_sd::weights::{load_module, KeyRules, SafetensorsFile};
use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::error::{MetricsError, Result};
use backbone::{Backbone, Features};
use lin::NetLinLayer;
use scaling::ScalingLayer;

/// The backbone LPIPS runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LpipsNet {
    /// torchvision's AlexNet (the package's default and the paper's recommended metric).
    Alex,
    /// torchvision's VGG16.
    Vgg,
}

impl LpipsNet {
    /// The usual name of the converted weight file.
    pub fn file_name(&self) -> &'static str {
        match self {
            LpipsNet::Alex => "lpips_alex.safetensors",
            LpipsNet::Vgg => "lpips_vgg.safetensors",
        }
    }

    pub(crate) fn features(&self) -> Features {
        match self {
            LpipsNet::Alex => alexnet::ALEXNET,
            LpipsNet::Vgg => vgg::VGG16,
        }
    }
}

impl fmt::Display for LpipsNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LpipsNet::Alex => "alex",
            LpipsNet::Vgg => "vgg",
        })
    }
}

impl FromStr for LpipsNet {
    type Err = MetricsError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "alex" => Ok(LpipsNet::Alex),
            "vgg" => Ok(LpipsNet::Vgg),
            other => Err(MetricsError::UnknownNet(other.to_string())),
        }
    }
}

/// `lpips.LPIPS`'s modules, named as its state_dict.
#[derive(Module, Debug)]
pub struct LpipsModel<B: Backend> {
    pub scaling_layer: ScalingLayer<B>,
    pub net: Backbone<B>,
    pub lin0: NetLinLayer<B>,
    pub lin1: NetLinLayer<B>,
    pub lin2: NetLinLayer<B>,
    pub lin3: NetLinLayer<B>,
    pub lin4: NetLinLayer<B>,
}

impl<B: Backend> LpipsModel<B> {
    pub fn init(net: LpipsNet, device: &B::Device) -> Self {
        let features = net.features();
        let [c0, c1, c2, c3, c4] = features.channels();
        LpipsModel {
            scaling_layer: ScalingLayer::init(device),
            net: features.init(net, device),
            lin0: NetLinLayer::init(c0, device),
            lin1: NetLinLayer::init(c1, device),
            lin2: NetLinLayer::init(c2, device),
            lin3: NetLinLayer::init(c3, device),
            lin4: NetLinLayer::init(c4, device),
        }
    }

    fn lins(&self) -> [&NetLinLayer<B>; 5] {
        [&self.lin0, &self.lin1, &self.lin2, &self.lin3, &self.lin4]
    }
}

/// `lpips.LPIPS` keeps its linear layers twice in the state_dict (`lin0` and the
/// `lins` ModuleList); a file saved straight from it may hold either name or both.
const KEY_RULES: KeyRules<'static> = KeyRules {
    aliases: &[
        ("lin0.", "lins.0."),
        ("lin1.", "lins.1."),
        ("lin2.", "lins.2."),
        ("lin3.", "lins.3."),
        ("lin4.", "lins.4."),
    ],
    ignored: &[
        "lins.0.model.1.weight",
        "lins.1.model.1.weight",
        "lins.2.model.1.weight",
        "lins.3.model.1.weight",
        "lins.4.model.1.weight",
    ],
};

/// Unit-normalises over channels: `x / (sqrt(sum x^2) + 1e-10)` (`lpips.normalize_tensor`).
fn normalize_tensor<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let norm = x.clone().square().sum_dim(1).sqrt();
    x / (norm + 1e-10)
}

/// The LPIPS distance with one backbone and its weights.
#[derive(Debug)]
pub struct Lpips<B: Backend> {
    model: LpipsModel<B>,
    net: LpipsNet,
}

impl<B: Backend> Lpips<B> {
    /// Loads a converted weight file for `net`; every tensor must be there with its
    /// shape (a file for the other backbone fails, naming the tensors).
    pub fn load(path: &Path, net: LpipsNet, device: &B::Device) -> Result<Self> {
        if !path.exists() {
            return Err(MetricsError::MissingLpipsWeights {
                path: path.to_path_buf(),
                net,
            });
        }
        let file = SafetensorsFile::open(path)?;
        let model = load_module(
            LpipsModel::init(net, device),
            &[file],
            &format!("LPIPS {net} model"),
            KEY_RULES,
        )?;
        Ok(Lpips { model, net })
    }

    pub fn net(&self) -> LpipsNet {
        self.net
    }

    /// The smallest height and width the backbone accepts (alex 31, vgg 16).
    pub fn min_side(&self) -> usize {
        self.net.features().min_side()
    }

    /// a, b: [N,3,H,W] in [-1,1], same shape. One distance per pair.
    ///
    /// Both batches go through the backbone in one forward pass.
    pub fn distance(&self, a: Tensor<B, 4>, b: Tensor<B, 4>) -> Result<Vec<f32>> {
        let (dims_a, dims_b) = (a.dims(), b.dims());
        if dims_a != dims_b {
            return Err(MetricsError::Invalid(format!(
                "LPIPS inputs differ in shape: {dims_a:?} and {dims_b:?} ([N, 3, H, W])"
            )));
        }
        let [n, channels, height, width] = dims_a;
        if n == 0 {
            return Err(MetricsError::Empty("image pairs"));
        }
        if channels != 3 {
            return Err(MetricsError::Invalid(format!(
                "LPIPS inputs have {channels} channels (shape {dims_a:?}), expected 3"
            )));
        }
        let min = self.min_side();
        if height < min || width < min {
            return Err(MetricsError::Invalid(format!(
                "images of {width}x{height} are too small for LPIPS {}: it needs at least {min}x{min}",
                self.net
            )));
        }
        let x = self.model.scaling_layer.forward(Tensor::cat(vec![a, b], 0));
        let features = self.model.net.forward(x);
        let mut total: Option<Tensor<B, 4>> = None;
        for (feature, lin) in features.into_iter().zip(self.model.lins()) {
            let feature = normalize_tensor(feature);
            let [_, c, h, w] = feature.dims();
            let f0 = feature.clone().slice([0..n, 0..c, 0..h, 0..w]);
            let f1 = feature.slice([n..2 * n, 0..c, 0..h, 0..w]);
            let diff = (f0 - f1).square();
            // [n, 1, 1, 1]
            let layer = lin.forward(diff).mean_dims(&[2, 3]);
            total = Some(match total {
                Some(t) => t + layer,
                None => layer,
            });
        }
        let total = total.expect("five layers");
        Ok(total
            .reshape([n])
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .expect("converted to f32"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_print() {
        for net in [LpipsNet::Alex, LpipsNet::Vgg] {
            assert_eq!(net.to_string().parse::<LpipsNet>().unwrap(), net);
        }
        assert_eq!(LpipsNet::Vgg.file_name(), "lpips_vgg.safetensors");
        let err = "squeeze".parse::<LpipsNet>().unwrap_err().to_string();
        assert!(err.contains("`squeeze`") && err.contains("`alex`"), "{err}");
    }
}
