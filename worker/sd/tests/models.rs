//! Golden tests: text encoder, UNet and VAE against diffusers/transformers outputs
//! on the committed tiny pipelines (`tools/make_sd_fixtures.py`), on the CPU
//! backend in f32. Tolerance: max abs error 1e-4.

mod common;

use atelier_sd::model_folder::{ModelFolder, Variant};
use burn::tensor::{Int, Tensor, TensorData};
use common::{assert_close, fixture, reference, TestBackend, PIPELINES};

const TOLERANCE: f32 = 1e-4;

#[test]
fn text_encoder_matches_transformers() {
    for name in PIPELINES {
        let device = Default::default();
        let folder = ModelFolder::open(fixture(name), Variant::Auto).unwrap();
        let model = folder.load_text_encoder::<TestBackend>(&device).unwrap();
        let refs = reference(name);
        let (shape, ids) = refs.read_i64("text.input_ids").unwrap();
        let ids: Tensor<TestBackend, 2, Int> =
            Tensor::from_data(TensorData::new(ids, [shape[0], shape[1]]), &device);
        let expected = refs
            .tensor::<TestBackend, 3>("text.last_hidden_state", &device)
            .unwrap();
        assert_close(
            &format!("{name}: text encoder last_hidden_state"),
            model.forward(ids),
            expected,
            TOLERANCE,
        );
    }
}

#[test]
fn unet_matches_diffusers() {
    for name in PIPELINES {
        let device = Default::default();
        let folder = ModelFolder::open(fixture(name), Variant::Auto).unwrap();
        let unet = folder.load_unet::<TestBackend>(&device).unwrap();
        let refs = reference(name);
        let sample = refs
            .tensor::<TestBackend, 4>("unet.sample", &device)
            .unwrap();
        let context = refs
            .tensor::<TestBackend, 3>("unet.encoder_hidden_states", &device)
            .unwrap();
        let (_, timesteps) = refs.read_f32("unet.timesteps").unwrap();
        let timesteps: Vec<f64> = timesteps.iter().map(|&t| t as f64).collect();
        let expected = refs.tensor::<TestBackend, 4>("unet.out", &device).unwrap();
        assert_close(
            &format!("{name}: UNet noise prediction at t={timesteps:?}"),
            unet.forward(sample, &timesteps, &context),
            expected,
            TOLERANCE,
        );
    }
}

#[test]
fn vae_matches_diffusers() {
    for name in PIPELINES {
        let device = Default::default();
        let folder = ModelFolder::open(fixture(name), Variant::Auto).unwrap();
        let vae = folder.load_vae::<TestBackend>(&device).unwrap();
        let refs = reference(name);
        let image = refs.tensor::<TestBackend, 4>("vae.image", &device).unwrap();
        let dist = vae.encode(image);
        let mean = refs.tensor::<TestBackend, 4>("vae.mean", &device).unwrap();
        let logvar = refs
            .tensor::<TestBackend, 4>("vae.logvar", &device)
            .unwrap();
        assert_close(&format!("{name}: VAE mean"), dist.mean, mean, TOLERANCE);
        assert_close(
            &format!("{name}: VAE logvar"),
            dist.logvar,
            logvar,
            TOLERANCE,
        );
        let latents = refs
            .tensor::<TestBackend, 4>("vae.latents", &device)
            .unwrap();
        let decoded = refs
            .tensor::<TestBackend, 4>("vae.decoded", &device)
            .unwrap();
        assert_close(
            &format!("{name}: VAE decode"),
            vae.decode(latents),
            decoded,
            TOLERANCE,
        );
    }
}

#[test]
fn parameter_counts_match_diffusers() {
    use burn::module::Module;
    for name in PIPELINES {
        let device = Default::default();
        let folder = ModelFolder::open(fixture(name), Variant::Auto).unwrap();
        let json: serde_json::Value =
            atelier_sd::config::read_json(&common::reference_json(name), "reference").unwrap();
        let counts = &json["param_counts"];
        let unet = folder
            .unet_config()
            .unwrap()
            .init::<TestBackend>(&device)
            .unwrap();
        let vae = folder
            .vae_config()
            .unwrap()
            .init::<TestBackend>(&device)
            .unwrap();
        let text = folder
            .text_encoder_config()
            .unwrap()
            .init::<TestBackend>(&device);
        assert_eq!(
            unet.num_params() as u64,
            counts["unet"].as_u64().unwrap(),
            "{name} unet"
        );
        assert_eq!(
            vae.num_params() as u64,
            counts["vae"].as_u64().unwrap(),
            "{name} vae"
        );
        assert_eq!(
            text.num_params() as u64,
            counts["text_encoder"].as_u64().unwrap(),
            "{name} text encoder"
        );
    }
}
