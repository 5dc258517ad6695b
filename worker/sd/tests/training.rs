//! Training: adapters on the full SD1.5 config, and golden training steps against
//! diffusers + peft + torch AdamW on the tiny pipeline (fixtures made by
//! `tools/make_training_fixtures.py`). Tolerance: 1e-4 relative.

mod common;

use std::path::PathBuf;

use atelier_sd::train::adapters::{attach_unet_lora, save_diffusers_lora, LoraShape};
use atelier_sd::unet_2d::UNet2DConditionConfig;
use atelier_sd::weights::{parameter_count, parameter_shapes};
use common::TestBackend;

#[test]
fn sd15_rank4_lora_has_the_study_size() {
    let device = Default::default();
    let config = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("configs/sd15/unet/config.json");
    let unet = UNet2DConditionConfig::from_file(&config)
        .unwrap()
        .init::<TestBackend>(&device)
        .unwrap();
    let base = parameter_count(&unet);
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
    let (unet, layers) = attach_unet_lora(
        unet,
        LoraShape {
            rank: 4,
            alpha: 4.0,
        },
        &mut rng,
        &device,
    );
    // 16 transformer blocks x 2 attentions x 4 projections.
    assert_eq!(layers, 128);
    assert_eq!(parameter_count(&unet) - base, 797_184);
    let adapters = parameter_shapes(&unet)
        .into_iter()
        .filter(|(name, _)| name.contains(".lora."))
        .count();
    assert_eq!(adapters, 256);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pytorch_lora_weights.safetensors");
    let written = save_diffusers_lora(&unet, &path, &[]).unwrap();
    assert_eq!(written, 256);
    // The size diffusers' own file has for SD1.5 rank 4 (f32).
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 3_226_184);
    let bytes = std::fs::read(&path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let down = file
        .tensor("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora.down.weight")
        .unwrap();
    assert_eq!(down.shape(), &[4, 320]);
    let up = file
        .tensor("unet.up_blocks.3.attentions.2.transformer_blocks.0.attn2.to_out.0.lora.up.weight")
        .unwrap();
    assert_eq!(up.shape(), &[320, 4]);
}

mod golden {
    use std::collections::HashMap;

    use atelier_sd::model_folder::{ModelFolder, Variant};
    use atelier_sd::precision::cast_frozen;
    use atelier_sd::schedulers::Ddpm;
    use atelier_sd::train::adamw::{AdamW, AdamWConfig};
    use atelier_sd::train::adapters::{
        adapter_grads, adapter_tensors, add_unet_lora, set_adapter_tensors, LoraShape,
    };
    use atelier_sd::train::step::{
        accumulate, diffusion_loss, encode_latents, micro_batch_gradients,
    };
    use atelier_sd::weights::SafetensorsFile;
    use burn::module::{Module, Param, ParamId};
    use burn::optim::GradientsParams;
    use burn::tensor::{DType, ElementConversion, FloatDType, Int, Tensor, TensorData};

    use super::common::{fixture, fixtures};

    type Train = burn::backend::Autodiff<super::TestBackend>;

    /// Loss, gradients and weights: error relative to the tensor's (or value's) scale.
    const CPU_RELATIVE: f32 = 1e-4;
    fn relative() -> f32 {
        super::common::tolerance(CPU_RELATIVE)
    }

    struct Fixture {
        json: serde_json::Value,
        file: SafetensorsFile,
    }

    impl Fixture {
        fn open(method: &str) -> Fixture {
            let dir = fixtures().join("training");
            Fixture {
                json: atelier_sd::config::read_json(&dir.join(format!("{method}.json")), "fixture")
                    .unwrap(),
                file: SafetensorsFile::open(dir.join(format!("{method}.safetensors"))).unwrap(),
            }
        }

        fn f32s(&self, key: &str) -> Vec<f64> {
            self.json["per_step"][key]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect()
        }

        fn with_prefix(&self, prefix: &str) -> HashMap<String, (Vec<usize>, Vec<f32>)> {
            self.file
                .names()
                .filter_map(|n| n.strip_prefix(prefix).map(|k| (n, k)))
                .map(|(n, k)| (k.to_string(), self.file.read_f32(n).unwrap()))
                .collect()
        }

        /// The u8 images [b, h, w, 3] as pixel values [b, 3, h, w] in [-1, 1], with
        /// the script's own arithmetic (torchvision in f32, or numpy in f64).
        fn pixel_values(&self, numpy: bool) -> Tensor<Train, 4> {
            let bytes = self.file.read_u8("pixels").unwrap();
            let (shape, pixels) = bytes;
            let values: Vec<f32> = pixels
                .iter()
                .map(|&p| {
                    if numpy {
                        (p as f64 / 127.5 - 1.0) as f32
                    } else {
                        (p as f32 / 255.0 - 0.5) / 0.5
                    }
                })
                .collect();
            Tensor::<Train, 4>::from_data(
                TensorData::new(values, [shape[0], shape[1], shape[2], shape[3]]),
                &Default::default(),
            )
            .permute([0, 3, 1, 2])
        }

        fn input_ids(&self) -> Tensor<Train, 2, Int> {
            let (shape, ids) = self.file.read_i64("input_ids").unwrap();
            Tensor::from_data(
                TensorData::new(ids, [shape[0], shape[1]]),
                &Default::default(),
            )
        }

        fn step_draws(&self, k: usize) -> (Tensor<Train, 4>, Tensor<Train, 4>, Vec<usize>) {
            let device = Default::default();
            let vae_noise = self
                .file
                .tensor(&format!("step{k}.vae_noise"), &device)
                .unwrap();
            let noise = self
                .file
                .tensor(&format!("step{k}.noise"), &device)
                .unwrap();
            let (_, t) = self.file.read_i64(&format!("step{k}.timesteps")).unwrap();
            (vae_noise, noise, t.iter().map(|&t| t as usize).collect())
        }
    }

    fn scalar(t: &Tensor<Train, 1>) -> f64 {
        t.clone().into_scalar().elem::<f64>()
    }

    fn assert_relative(what: &str, actual: f64, expected: f64) {
        assert_relative_within(what, actual, expected, relative() as f64);
    }

    fn assert_relative_within(what: &str, actual: f64, expected: f64, tolerance: f64) {
        let err = (actual - expected).abs() / expected.abs();
        eprintln!("{what}: {actual} vs {expected} (relative {err:e})");
        assert!(
            err <= tolerance,
            "{what}: {actual} vs {expected} (relative {err:e})"
        );
    }

    /// ||a - b|| / ||b|| over all the named tensors together (the whole gradient or
    /// the whole adapter), and the worst single tensor by the same measure.
    fn compare(
        what: &str,
        actual: &[(String, Vec<usize>, Vec<f32>)],
        expected: &HashMap<String, (Vec<usize>, Vec<f32>)>,
    ) -> f64 {
        assert_eq!(actual.len(), expected.len(), "{what}: tensor count");
        let (mut diff, mut norm) = (0.0f64, 0.0f64);
        let mut worst = (0.0f64, String::new());
        for (key, shape, values) in actual {
            let key = key
                .strip_prefix("unet.")
                .unwrap()
                .replace(".lora.down.weight", ".lora_A.weight")
                .replace(".lora.up.weight", ".lora_B.weight");
            let (want_shape, want) = &expected[&key];
            assert_eq!(shape, want_shape, "{what}: {key}");
            let (mut d, mut n) = (0.0f64, 0.0f64);
            for (a, b) in values.iter().zip(want) {
                d += ((a - b) as f64).powi(2);
                n += (*b as f64).powi(2);
            }
            if n > 0.0 && (d / n).sqrt() > worst.0 {
                worst = ((d / n).sqrt(), key.clone());
            }
            diff += d;
            norm += n;
        }
        let relative = (diff / norm).sqrt();
        eprintln!(
            "{what}: relative error {relative:e} (worst tensor {:e}: {})",
            worst.0, worst.1
        );
        relative
    }

    /// bf16/f16 frozen weights against the f32 fixtures: a sanity bound (bf16 keeps
    /// 8 bits of mantissa), not a golden tolerance.
    const HALF_RELATIVE: f64 = 5e-2;

    /// Three steps against the fixture; `frozen` casts the frozen UNet and VAE
    /// weights as mixed-precision training does.
    fn lora_run(method: &str, prior_loss_weight: Option<f64>, frozen: Option<FloatDType>) {
        let tolerance = match frozen {
            Some(FloatDType::BF16 | FloatDType::F16) => HALF_RELATIVE,
            _ => relative() as f64,
        };
        let assert_relative =
            |what: &str, a: f64, b: f64| assert_relative_within(what, a, b, tolerance);
        let fx = Fixture::open(method);
        let device = Default::default();
        let folder = ModelFolder::open(fixture("tiny-sd"), Variant::Auto).unwrap();
        let vae = folder.load_vae::<Train>(&device).unwrap().no_grad();
        let text = folder
            .load_text_encoder::<Train>(&device)
            .unwrap()
            .no_grad();
        let ddpm = Ddpm::new(&folder.scheduler_config().unwrap()).unwrap();
        let unet = folder.load_unet::<Train>(&device).unwrap();
        // The initial adapters come from the fixture; the generator is not used for them.
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
        let (unet, layers) = add_unet_lora(
            unet,
            LoraShape {
                rank: 2,
                alpha: 4.0,
            },
            &mut rng,
            &device,
        );
        assert_eq!(layers, 128);
        let mut unet = set_adapter_tensors(unet, &fx.with_prefix("init.")).unwrap();
        let vae = match frozen {
            Some(dtype) => {
                unet = cast_frozen(unet, dtype);
                let conv_in = unet.conv_in.weight.val().dtype();
                assert_eq!(conv_in, dtype.into(), "frozen weights are cast");
                let norm = unet.conv_norm_out.gamma.as_ref().unwrap().val().dtype();
                assert_eq!(norm, DType::F32, "norms stay f32");
                cast_frozen(vae, dtype)
            }
            None => vae,
        };
        let mut optimizer = AdamW::<Train>::new(AdamWConfig {
            lr: 1e-3,
            ..AdamWConfig::default()
        });
        let pixels = fx.pixel_values(false);
        let context = text.forward(fx.input_ids()).detach();
        let losses = fx.f32s("loss");
        let norms = fx.f32s("total_norm");
        for k in 1..=3 {
            let (vae_noise, noise, timesteps) = fx.step_draws(k);
            let latents = encode_latents(&vae, pixels.clone(), vae_noise, 0.18215);
            let loss = diffusion_loss(
                &unet,
                &ddpm,
                latents,
                noise,
                &timesteps,
                &context,
                prior_loss_weight,
            );
            assert_relative(
                &format!("{method} step {k} loss"),
                scalar(&loss.total),
                losses[k - 1],
            );
            if let (Some(instance), Some(prior)) = (&loss.instance, &loss.prior) {
                assert_relative(
                    "instance loss",
                    scalar(instance),
                    fx.f32s("instance_loss")[k - 1],
                );
                assert_relative("prior loss", scalar(prior), fx.f32s("prior_loss")[k - 1]);
            }
            let grads = GradientsParams::from_grads(loss.total.backward(), &unet);
            if k == 1 {
                let err = compare(
                    &format!("{method} step-1 gradients"),
                    &adapter_grads(&unet, &grads),
                    &fx.with_prefix("grad1."),
                );
                assert!(err <= tolerance, "{method}: gradients off by {err:e}");
            }
            let (next, report) = optimizer.step(unet, &grads);
            assert_eq!(report.parameters_updated, 256);
            assert_relative(
                &format!("{method} step {k} grad norm"),
                report.grad_norm,
                norms[k - 1],
            );
            unet = next;
        }
        let err = compare(
            &format!("{method} adapters after 3 steps"),
            &adapter_tensors(&unet),
            &fx.with_prefix("final."),
        );
        assert!(err <= tolerance, "{method}: final adapters off by {err:e}");
    }

    #[test]
    fn lora_steps_match_diffusers_and_peft() {
        lora_run("lora", None, None);
    }

    /// Mixed precision: frozen weights in another dtype than the f32 adapters. On
    /// the CPU (ndarray has no bf16) f64 stands in for bf16: ndarray refuses any op
    /// that mixes dtypes, so this checks every cast, and the result must still match
    /// diffusers to the golden tolerance. On CUDA it is bf16.
    #[test]
    fn lora_steps_with_frozen_weights_in_another_dtype() {
        let frozen = if cfg!(feature = "test-cuda") {
            FloatDType::BF16
        } else {
            FloatDType::F64
        };
        lora_run("lora", None, Some(frozen));
    }

    #[test]
    fn dreambooth_steps_with_prior_preservation_match() {
        lora_run("dreambooth", Some(1.0), None);
    }

    /// ||a - b|| / ||b|| over tensors named alike, in the same order.
    fn relative_difference(
        a: &[(String, Vec<usize>, Vec<f32>)],
        b: &[(String, Vec<usize>, Vec<f32>)],
    ) -> f64 {
        assert_eq!(a.len(), b.len());
        let (mut diff, mut norm) = (0.0f64, 0.0f64);
        for ((name_a, shape_a, a), (name_b, shape_b, b)) in a.iter().zip(b) {
            assert_eq!((name_a, shape_a), (name_b, shape_b));
            for (x, y) in a.iter().zip(b) {
                diff += ((x - y) as f64).powi(2);
                norm += (*y as f64).powi(2);
            }
        }
        (diff / norm).sqrt()
    }

    /// Gradient accumulation as the trainer does it: two micro-batches of one
    /// example each (loss / 2, gradients summed) against the batch of both, with
    /// the same images, noise and timesteps (diffusers' batch-2 fixture), for three
    /// AdamW steps with the global clip. Gradients and adapters agree to float
    /// rounding, and the accumulated run stays within the golden tolerance of
    /// diffusers' batch-2 run.
    #[test]
    fn two_accumulated_micro_batches_equal_the_batch_of_two() {
        let fx = Fixture::open("lora");
        let device = Default::default();
        let folder = ModelFolder::open(fixture("tiny-sd"), Variant::Auto).unwrap();
        let vae = folder.load_vae::<Train>(&device).unwrap().no_grad();
        let text = folder
            .load_text_encoder::<Train>(&device)
            .unwrap()
            .no_grad();
        let ddpm = Ddpm::new(&folder.scheduler_config().unwrap()).unwrap();
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
        let shape = LoraShape {
            rank: 2,
            alpha: 4.0,
        };
        let (unet, _) = add_unet_lora(
            folder.load_unet::<Train>(&device).unwrap(),
            shape,
            &mut rng,
            &device,
        );
        let mut whole = set_adapter_tensors(unet, &fx.with_prefix("init.")).unwrap();
        let mut split = whole.clone();
        let adamw = AdamWConfig {
            lr: 1e-3,
            ..AdamWConfig::default()
        };
        let mut whole_optimizer = AdamW::<Train>::new(adamw);
        let mut split_optimizer = AdamW::<Train>::new(adamw);
        let pixels = fx.pixel_values(false);
        let context = text.forward(fx.input_ids()).detach();
        const ROUNDING: f64 = 1e-6;
        for k in 1..=3 {
            let (vae_noise, noise, timesteps) = fx.step_draws(k);
            assert_eq!(timesteps.len(), 2, "the fixture's batch is two");
            let latents = encode_latents(&vae, pixels.clone(), vae_noise.clone(), 0.18215);
            let loss = diffusion_loss(
                &whole,
                &ddpm,
                latents,
                noise.clone(),
                &timesteps,
                &context,
                None,
            );
            let batch_grads = micro_batch_gradients(loss.total, 1, &whole);
            let mut summed = None;
            for i in 0..2 {
                let one = |t: &Tensor<Train, 4>| t.clone().narrow(0, i, 1);
                let latents = encode_latents(&vae, one(&pixels), one(&vae_noise), 0.18215);
                let loss = diffusion_loss(
                    &split,
                    &ddpm,
                    latents,
                    one(&noise),
                    &timesteps[i..i + 1],
                    &context.clone().narrow(0, i, 1),
                    None,
                );
                let micro = micro_batch_gradients(loss.total, 2, &split);
                summed = Some(accumulate(summed, micro, &split));
            }
            let summed = summed.unwrap();
            let err = relative_difference(
                &adapter_grads(&split, &summed),
                &adapter_grads(&whole, &batch_grads),
            );
            eprintln!("step {k}: accumulated gradients vs batch of two: relative {err:e}");
            assert!(err <= ROUNDING, "step {k}: gradients differ by {err:e}");
            let (next, whole_report) = whole_optimizer.step(whole, &batch_grads);
            whole = next;
            let (next, split_report) = split_optimizer.step(split, &summed);
            split = next;
            let norm_err =
                (split_report.grad_norm - whole_report.grad_norm).abs() / whole_report.grad_norm;
            assert!(norm_err <= ROUNDING, "step {k}: grad norms {norm_err:e}");
            let err = relative_difference(&adapter_tensors(&split), &adapter_tensors(&whole));
            eprintln!("step {k}: adapters after the update: relative {err:e}");
            assert!(err <= ROUNDING, "step {k}: adapters differ by {err:e}");
        }
        let err = compare(
            "accumulated adapters after 3 steps vs diffusers' batch of two",
            &adapter_tensors(&split),
            &fx.with_prefix("final."),
        );
        assert!(err <= relative() as f64, "off by {err:e}");
    }

    #[test]
    fn textual_inversion_steps_match_and_leave_other_rows_alone() {
        let fx = Fixture::open("ti");
        let device = Default::default();
        let folder = ModelFolder::open(fixture("tiny-sd"), Variant::Auto).unwrap();
        let vae = folder.load_vae::<Train>(&device).unwrap().no_grad();
        let unet = folder.load_unet::<Train>(&device).unwrap().no_grad();
        let ddpm = Ddpm::new(&folder.scheduler_config().unwrap()).unwrap();
        let mut text = folder
            .load_text_encoder::<Train>(&device)
            .unwrap()
            .no_grad();
        let ti = &fx.json["textual_inversion"];
        let initializer = ti["initializer_token_id"].as_u64().unwrap() as usize;
        let placeholder = ti["placeholder_token_id"].as_u64().unwrap() as usize;
        assert_eq!(placeholder, text.vocab_rows());
        let table = text.text_model.embeddings.token_embedding.weight.val();
        let init_row: Vec<f32> = table
            .clone()
            .narrow(0, initializer, 1)
            .into_data()
            .convert::<f32>()
            .into_vec()
            .unwrap();
        assert_eq!(
            init_row,
            fx.file.read_f32("init.token_embedding_row").unwrap().1
        );
        text.append_token_embeddings(init_row, 1);
        let original = text
            .text_model
            .embeddings
            .token_embedding
            .weight
            .val()
            .inner();
        let embedding = &mut text.text_model.embeddings.token_embedding;
        embedding.weight = Param::initialized(
            ParamId::new(),
            embedding.weight.val().detach().require_grad(),
        );
        let mut optimizer = AdamW::<Train>::new(AdamWConfig {
            lr: 5e-3,
            max_grad_norm: None,
            ..AdamWConfig::default()
        });
        let pixels = fx.pixel_values(true);
        let ids = fx.input_ids();
        let losses = fx.f32s("loss");
        let row = |t: Tensor<
            <Train as burn::tensor::backend::AutodiffBackend>::InnerBackend,
            2,
        >|
         -> Vec<f32> {
            t.narrow(0, placeholder, 1)
                .into_data()
                .convert::<f32>()
                .into_vec()
                .unwrap()
        };
        for k in 1..=3 {
            let (vae_noise, noise, timesteps) = fx.step_draws(k);
            let latents = encode_latents(&vae, pixels.clone(), vae_noise, 0.18215);
            let context = text.forward(ids.clone());
            let loss = diffusion_loss(&unet, &ddpm, latents, noise, &timesteps, &context, None);
            assert_relative(
                &format!("ti step {k} loss"),
                scalar(&loss.total),
                losses[k - 1],
            );
            let raw = loss.total.backward();
            if k == 1 {
                let grad = text
                    .text_model
                    .embeddings
                    .token_embedding
                    .weight
                    .val()
                    .grad(&raw)
                    .unwrap();
                let got = row(grad);
                let (_, want) = fx.file.read_f32("grad1.token_embedding_row").unwrap();
                let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                let err = got
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (a - b).abs() / scale)
                    .fold(0.0f32, f32::max);
                eprintln!("ti step-1 gradient of the new row: relative error {err:e}");
                assert!(err <= relative());
            }
            let grads = GradientsParams::from_grads(raw, &text);
            let (next, _) = optimizer.step(text, &grads);
            text = next;
            // Every row but the new one back to its value before training.
            let embedding = &mut text.text_model.embeddings.token_embedding;
            let trained = embedding.weight.val().inner();
            let [rows, _] = trained.dims();
            let restored = Tensor::cat(
                vec![
                    original.clone().narrow(0, 0, placeholder),
                    trained.narrow(0, placeholder, rows - placeholder),
                ],
                0,
            );
            embedding.weight = Param::initialized(
                embedding.weight.id,
                Tensor::from_inner(restored).require_grad(),
            );
        }
        let table = text
            .text_model
            .embeddings
            .token_embedding
            .weight
            .val()
            .inner();
        let (_, want) = fx.file.read_f32("final.token_embedding_row").unwrap();
        let got = row(table.clone());
        let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let err = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs() / scale)
            .fold(0.0f32, f32::max);
        eprintln!("ti new row after 3 steps: relative error {err:e}");
        assert!(err <= relative());
        let others: Vec<f32> = table
            .narrow(0, 0, placeholder)
            .into_data()
            .into_vec()
            .unwrap();
        let before: Vec<f32> = original
            .narrow(0, 0, placeholder)
            .into_data()
            .into_vec()
            .unwrap();
        assert!(others == before, "rows other than the placeholder changed");
    }
}
