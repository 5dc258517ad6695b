//! Safetensors weights, keyed by module path.
//!
//! A burn record path is the diffusers weight name, with two differences that are
//! handled here and nowhere else: burn names norm parameters `gamma`/`beta` where
//! PyTorch says `weight`/`bias`, and burn stores a `Linear` weight as `[in, out]`,
//! transposed against PyTorch's `[out, in]`.
//!
//! Loading memory-maps the file and copies one tensor at a time into the backend,
//! then tells the kernel to drop that tensor's pages, so a model is never held twice
//! (the file's pages would otherwise count in the process's resident memory).

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use memmap2::{Mmap, UncheckedAdvice};
use safetensors::tensor::TensorInfo;
use safetensors::{Dtype, SafeTensors};

use crate::error::{Result, SdError};

/// An open, memory-mapped safetensors file.
pub struct SafetensorsFile {
    path: PathBuf,
    mmap: Mmap,
    /// Offset of the data section (after the 8-byte length and the JSON header).
    data_start: usize,
    tensors: HashMap<String, TensorInfo>,
}

impl std::fmt::Debug for SafetensorsFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SafetensorsFile")
            .field("path", &self.path)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl SafetensorsFile {
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|e| SdError::io(&path, e))?;
        // SAFETY: the map is read-only; a file changed under us while mapped gives
        // wrong numbers, not memory unsafety in safe code we call.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| SdError::io(&path, e))?;
        let invalid = |message: String| SdError::Safetensors {
            path: path.clone(),
            message,
        };
        // `deserialize` checks that every tensor's bytes lie inside the file, which
        // is what catches a truncated download.
        SafeTensors::deserialize(&mmap).map_err(|e| invalid(e.to_string()))?;
        let (header_len, metadata) =
            SafeTensors::read_metadata(&mmap).map_err(|e| invalid(e.to_string()))?;
        let tensors = metadata
            .tensors()
            .into_iter()
            .map(|(name, info)| (name, info.clone()))
            .collect();
        Ok(SafetensorsFile {
            path,
            mmap,
            data_start: 8 + header_len,
            tensors,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.tensors.get(name).map(|info| info.shape.as_slice())
    }

    /// A tensor as f32 values (f16, bf16 and f64 are converted), with its shape.
    pub fn read_f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let info = self.info(name)?;
        let values = self.convert_f32(name, info)?;
        Ok((info.shape.clone(), values))
    }

    /// A u8 tensor (images), with its shape.
    pub fn read_u8(&self, name: &str) -> Result<(Vec<usize>, Vec<u8>)> {
        let info = self.info(name)?;
        match info.dtype {
            Dtype::U8 => Ok((info.shape.clone(), self.bytes(info).to_vec())),
            other => Err(self.unsupported(name, other)),
        }
    }

    /// A tensor of integers as i64 values, with its shape.
    pub fn read_i64(&self, name: &str) -> Result<(Vec<usize>, Vec<i64>)> {
        let info = self.info(name)?;
        let bytes = self.bytes(info);
        let values = match info.dtype {
            Dtype::I64 => bytes
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
                .collect(),
            Dtype::I32 => bytes
                .chunks_exact(4)
                .map(|b| i32::from_le_bytes(b.try_into().unwrap()) as i64)
                .collect(),
            other => return Err(self.unsupported(name, other)),
        };
        Ok((info.shape.clone(), values))
    }

    /// A tensor on `device`, checked against the expected rank.
    pub fn tensor<B: Backend, const D: usize>(
        &self,
        name: &str,
        device: &B::Device,
    ) -> Result<Tensor<B, D>> {
        let (shape, values) = self.read_f32(name)?;
        if shape.len() != D {
            return Err(SdError::Safetensors {
                path: self.path.clone(),
                message: format!("tensor `{name}` has shape {shape:?}, expected {D} dimensions"),
            });
        }
        Ok(Tensor::from_data(TensorData::new(values, shape), device))
    }

    fn info(&self, name: &str) -> Result<&TensorInfo> {
        self.tensors.get(name).ok_or_else(|| SdError::Safetensors {
            path: self.path.clone(),
            message: format!("no tensor named `{name}`"),
        })
    }

    fn bytes(&self, info: &TensorInfo) -> &[u8] {
        let (start, end) = info.data_offsets;
        &self.mmap[self.data_start + start..self.data_start + end]
    }

    fn convert_f32(&self, name: &str, info: &TensorInfo) -> Result<Vec<f32>> {
        let bytes = self.bytes(info);
        let values = match info.dtype {
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect(),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => bytes
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::F64 => bytes
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().unwrap()) as f32)
                .collect(),
            other => return Err(self.unsupported(name, other)),
        };
        Ok(values)
    }

    fn unsupported(&self, name: &str, dtype: Dtype) -> SdError {
        SdError::Safetensors {
            path: self.path.clone(),
            message: format!("tensor `{name}` has dtype {dtype:?}, which atelier cannot read"),
        }
    }

    /// Drops the pages of a tensor that has been copied out.
    fn release(&self, info: &TensorInfo) {
        let (start, end) = info.data_offsets;
        // SAFETY: the map is private and read-only, so dropped pages are re-read from
        // the file if touched again; no slice into this range is alive here.
        let _ = unsafe {
            self.mmap.unchecked_advise_range(
                UncheckedAdvice::DontNeed,
                self.data_start + start,
                end - start,
            )
        };
    }
}

/// How a parameter's burn path and layout differ from the PyTorch name and layout.
fn torch_name(path: &[String], container: &str) -> (String, bool) {
    let mut name = path.join(".");
    let leaf = path.last().map(String::as_str).unwrap_or("");
    let is_norm = matches!(container, "Struct:LayerNorm" | "Struct:GroupNorm");
    if is_norm && (leaf == "gamma" || leaf == "beta") {
        name.truncate(name.len() - leaf.len());
        name.push_str(if leaf == "gamma" { "weight" } else { "bias" });
    }
    let transposed = container == "Struct:Linear" && leaf == "weight";
    (name, transposed)
}

/// A tensor's values and shape in PyTorch's layout (`transposed`: a burn Linear
/// weight, stored [in, out]).
pub(crate) fn torch_values<B: Backend, const D: usize>(
    tensor: Tensor<B, D>,
    transposed: bool,
) -> (Vec<usize>, Vec<f32>) {
    let data = tensor.into_data().convert::<f32>();
    let mut shape = data.shape.to_vec();
    let mut values = data.into_vec::<f32>().expect("converted to f32");
    if transposed && shape.len() == 2 {
        values = transpose_2d(&values, shape[0], shape[1]);
        shape.swap(0, 1);
    }
    (shape, values)
}

pub(crate) fn transpose_2d(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; values.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = values[r * cols + c];
        }
    }
    out
}

/// Tracks the module path while a mapper or visitor walks a module. Enum variants
/// are not part of the path: an enum stands for one diffusers module whose kind
/// depends on the config (`proj_in` is a convolution or a linear layer).
#[derive(Default)]
pub(crate) struct PathStack {
    entries: Vec<(String, String)>,
}

impl PathStack {
    pub(crate) fn enter(&mut self, name: &str, container: &str) {
        self.entries.push((name.to_string(), container.to_string()));
    }

    pub(crate) fn exit(&mut self) {
        self.entries.pop();
    }

    /// Whether the parameter being visited is inside a module of one of these
    /// container types (`Struct:GroupNorm`, ...).
    pub(crate) fn within(&self, containers: &[&str]) -> bool {
        self.entries
            .iter()
            .any(|(_, container)| containers.contains(&container.as_str()))
    }

    /// The PyTorch name of the parameter being visited, and whether its layout is
    /// transposed against PyTorch's.
    pub(crate) fn torch_name(&self) -> (String, bool) {
        let names: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, container)| !container.starts_with("Enum:"))
            .map(|(name, _)| name.clone())
            .collect();
        let container = self.entries.last().map(|(_, c)| c.as_str()).unwrap_or("");
        torch_name(&names, container)
    }
}

struct Loader<'a> {
    files: &'a [SafetensorsFile],
    aliases: &'a [(&'a str, &'a str)],
    stack: PathStack,
    used: BTreeSet<String>,
    problems: Vec<String>,
}

/// Finds `name`, or failing that the name with an aliased prefix; returns the key
/// found with its file.
fn find<'f>(
    files: &'f [SafetensorsFile],
    aliases: &[(&str, &str)],
    name: &str,
) -> Option<(String, &'f SafetensorsFile, &'f TensorInfo)> {
    let candidates = std::iter::once(name.to_string()).chain(
        aliases
            .iter()
            .filter_map(|(from, to)| name.strip_prefix(from).map(|rest| format!("{to}{rest}"))),
    );
    for key in candidates {
        if let Some((f, info)) = files
            .iter()
            .find_map(|f| f.tensors.get(&key).map(|info| (f, info)))
        {
            return Some((key, f, info));
        }
    }
    None
}

impl<B: Backend> ModuleMapper<B> for Loader<'_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.stack.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.exit();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (name, transposed) = self.stack.torch_name();
        let expected = param.lazy_shape().to_vec();
        let Some((key, file, info)) = find(self.files, self.aliases, &name) else {
            self.problems
                .push(format!("missing tensor `{name}` (shape {expected:?})"));
            return param;
        };
        self.used.insert(key);
        let mut found = info.shape.clone();
        if transposed && found.len() == 2 {
            found.swap(0, 1);
        }
        if found != expected {
            let in_file = &info.shape;
            let mut wanted = expected.clone();
            if transposed && wanted.len() == 2 {
                wanted.swap(0, 1);
            }
            self.problems.push(format!(
                "tensor `{name}` in `{}` has shape {in_file:?}, expected {wanted:?}",
                file.path.display()
            ));
            return param;
        }
        let values = match file.convert_f32(&name, info) {
            Ok(values) => values,
            Err(e) => {
                self.problems.push(e.to_string());
                return param;
            }
        };
        file.release(info);
        let values = if transposed {
            transpose_2d(&values, info.shape[0], info.shape[1])
        } else {
            values
        };
        let device = param.lazy_device();
        let tensor = Tensor::from_data(TensorData::new(values, expected), &device);
        let id = param.id;
        param.transform_for_load(tensor, id)
    }
}

/// How a component's files may name its tensors besides the module path.
#[derive(Debug, Clone, Copy, Default)]
pub struct KeyRules<'a> {
    /// `(prefix, replacement)`: a tensor missing under its own name is looked up
    /// with the prefix replaced (transformers 5 saves CLIP without `text_model.`).
    pub aliases: &'a [(&'a str, &'a str)],
    /// Tensors that are buffers, not weights (CLIP's `position_ids`).
    pub ignored: &'a [&'a str],
}

/// Loads `files` into `module`, which was built from its config. Every parameter
/// must be found with the right shape and every tensor in the files must be used.
pub fn load_module<B: Backend, M: Module<B>>(
    module: M,
    files: &[SafetensorsFile],
    component: &str,
    rules: KeyRules,
) -> Result<M> {
    let ignored = rules.ignored;
    let mut loader = Loader {
        files,
        aliases: rules.aliases,
        stack: PathStack::default(),
        used: BTreeSet::new(),
        problems: Vec::new(),
    };
    let module = module.map(&mut loader);
    let mut problems = loader.problems;
    let mut unexpected: Vec<&str> = files
        .iter()
        .flat_map(|f| f.names())
        .filter(|name| !loader.used.contains(*name) && !ignored.contains(name))
        .collect();
    unexpected.sort_unstable();
    problems.extend(
        unexpected
            .into_iter()
            .map(|name| format!("unexpected tensor `{name}`")),
    );
    if problems.is_empty() {
        Ok(module)
    } else {
        Err(SdError::Weights {
            component: component.to_string(),
            files: files.iter().map(|f| f.path.clone()).collect(),
            problems,
        })
    }
}

struct Collector<F: Fn(&str) -> bool> {
    stack: PathStack,
    keep: F,
    tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
}

impl<B: Backend, F: Fn(&str) -> bool> ModuleVisitor<B> for Collector<F> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.stack.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.exit();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let (name, transposed) = self.stack.torch_name();
        if !(self.keep)(&name) {
            return;
        }
        let (shape, values) = torch_values(param.val(), transposed);
        self.tensors.push((name, shape, values));
    }
}

/// The module's parameters under their diffusers names and PyTorch layouts.
pub fn named_tensors<B: Backend, M: Module<B>>(module: &M) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    named_tensors_where(module, |_| true)
}

/// Like [`named_tensors`], for the names `keep` accepts; other parameters are not
/// read (nor initialised, if lazy).
pub fn named_tensors_where<B: Backend, M: Module<B>>(
    module: &M,
    keep: impl Fn(&str) -> bool,
) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut collector = Collector {
        stack: PathStack::default(),
        keep,
        tensors: Vec::new(),
    };
    module.visit(&mut collector);
    collector.tensors
}

struct ShapeCollector {
    stack: PathStack,
    entries: Vec<(String, Vec<usize>)>,
}

impl<B: Backend> ModuleVisitor<B> for ShapeCollector {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.stack.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.exit();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let (name, transposed) = self.stack.torch_name();
        let mut shape = param.lazy_shape().to_vec();
        if transposed && shape.len() == 2 {
            shape.swap(0, 1);
        }
        self.entries.push((name, shape));
    }
}

struct StreamWriter<W: std::io::Write> {
    stack: PathStack,
    out: W,
    half: bool,
    error: Option<std::io::Error>,
}

impl<B: Backend, W: std::io::Write> ModuleVisitor<B> for StreamWriter<W> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.stack.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.exit();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if self.error.is_some() {
            return;
        }
        let (_, transposed) = self.stack.torch_name();
        let (_, values) = torch_values(param.val(), transposed);
        let bytes: Vec<u8> = if self.half {
            values
                .iter()
                .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                .collect()
        } else {
            values.iter().flat_map(|v| v.to_le_bytes()).collect()
        };
        if let Err(e) = self.out.write_all(&bytes) {
            self.error = Some(e);
        }
    }
}

/// Writes f32 tensors (in the order given) with `metadata`, byte for byte the same
/// for the same input: the header's maps are sorted, unlike the safetensors crate's
/// `HashMap` metadata. Names must be unique.
pub fn write_f32_safetensors(
    path: &Path,
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    metadata: &[(&str, String)],
) -> Result<()> {
    let entries: Vec<(String, Vec<usize>)> = tensors
        .iter()
        .map(|(name, shape, _)| (name.clone(), shape.clone()))
        .collect();
    let io = |e| SdError::io(path, e);
    let mut out = create_with_header(path, &entries, false, metadata)?;
    use std::io::Write;
    for (_, _, values) in tensors {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        out.write_all(&bytes).map_err(io)?;
    }
    out.flush().map_err(io)
}

/// Creates `path` and writes a safetensors header for `entries` (f32, or f16 when
/// `half`), their data to follow in that order. The header's maps are sorted, so
/// the same input gives the same bytes; the data section starts 8-byte aligned, as
/// the safetensors writer pads it.
fn create_with_header(
    path: &Path,
    entries: &[(String, Vec<usize>)],
    half: bool,
    metadata: &[(&str, String)],
) -> Result<std::io::BufWriter<File>> {
    let (element, dtype) = if half { (2, "F16") } else { (4, "F32") };
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        let meta: serde_json::Map<String, serde_json::Value> = metadata
            .iter()
            .map(|(k, v)| ((*k).to_string(), serde_json::Value::String(v.clone())))
            .collect();
        header.insert("__metadata__".into(), serde_json::Value::Object(meta));
    }
    let mut offset = 0usize;
    for (name, shape) in entries {
        let len = shape.iter().product::<usize>() * element;
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len]}),
        );
        offset += len;
    }
    let mut header = serde_json::to_vec(&header).expect("a JSON map serialises");
    while !header.len().is_multiple_of(8) {
        header.push(b' ');
    }
    let io = |e| SdError::io(path, e);
    let mut out = std::io::BufWriter::new(File::create(path).map_err(io)?);
    use std::io::Write;
    out.write_all(&(header.len() as u64).to_le_bytes())
        .map_err(io)?;
    out.write_all(&header).map_err(io)?;
    Ok(out)
}

/// Parameter names (diffusers') and shapes (PyTorch layout), without materialising
/// lazily-initialised parameters.
pub fn parameter_shapes<B: Backend, M: Module<B>>(module: &M) -> Vec<(String, Vec<usize>)> {
    let mut shapes = ShapeCollector {
        stack: PathStack::default(),
        entries: Vec::new(),
    };
    module.visit(&mut shapes);
    shapes.entries
}

/// The number of parameters, counted without allocating them (burn's
/// `num_params` initialises every lazy parameter: 3.4 GB for SD1.5's UNet).
pub fn parameter_count<B: Backend, M: Module<B>>(module: &M) -> usize {
    parameter_shapes(module)
        .iter()
        .map(|(_, shape)| shape.iter().product::<usize>())
        .sum()
}

/// Writes the module as a diffusers-style safetensors file (f32, or f16 for an
/// fp16 variant), one tensor at a time: memory stays at the model plus one tensor.
pub fn save_module<B: Backend, M: Module<B>>(module: &M, path: &Path, half: bool) -> Result<()> {
    let out = create_with_header(path, &parameter_shapes(module), half, &[])?;
    let mut writer = StreamWriter {
        stack: PathStack::default(),
        out,
        half,
        error: None,
    };
    module.visit(&mut writer);
    let io = |e| SdError::io(path, e);
    if let Some(e) = writer.error {
        return Err(io(e));
    }
    use std::io::Write;
    writer.out.flush().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn norm_and_linear_names_follow_pytorch() {
        let path = |p: &str| p.split('.').map(str::to_string).collect::<Vec<_>>();
        assert_eq!(
            torch_name(&path("norm1.gamma"), "Struct:LayerNorm"),
            ("norm1.weight".to_string(), false)
        );
        assert_eq!(
            torch_name(&path("norm.beta"), "Struct:GroupNorm"),
            ("norm.bias".to_string(), false)
        );
        assert_eq!(
            torch_name(&path("attn1.to_q.weight"), "Struct:Linear"),
            ("attn1.to_q.weight".to_string(), true)
        );
        assert_eq!(
            torch_name(&path("conv_in.weight"), "Struct:Conv2d"),
            ("conv_in.weight".to_string(), false)
        );
    }

    #[test]
    fn saved_modules_load_back_with_pytorch_names() {
        type B = burn::backend::NdArray<f32>;
        let device = Default::default();
        let config = crate::clip::ClipTextConfig {
            vocab_size: 10,
            hidden_size: 4,
            intermediate_size: 6,
            num_hidden_layers: 1,
            num_attention_heads: 2,
            max_position_embeddings: 5,
            hidden_act: crate::layers::Activation::QuickGelu,
            layer_norm_eps: 1e-5,
        };
        let model = config.init::<B>(&device);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        save_module(&model, &path, false).unwrap();
        let file = SafetensorsFile::open(&path).unwrap();
        assert_eq!(
            file.shape("text_model.encoder.layers.0.mlp.fc1.weight"),
            Some(&[6, 4][..])
        );
        assert!(file.shape("text_model.final_layer_norm.weight").is_some());
        let loaded = load_module(
            config.init::<B>(&device),
            &[file],
            "text encoder",
            KeyRules::default(),
        )
        .unwrap();
        let before = named_tensors(&model);
        let after = named_tensors(&loaded);
        assert_eq!(before, after);
    }

    #[test]
    fn transpose_swaps_rows_and_columns() {
        assert_eq!(
            transpose_2d(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, 3),
            vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]
        );
    }
}
