//! The whole text-to-image pipeline from fixed latents against diffusers'
//! `StableDiffusionPipeline` (output_type "pt", before quantisation), for DDIM,
//! Euler and DPM++ 2M on both tiny pipelines. Tolerance: max abs error 1e-3 on the
//! image in [0, 1]; the prompt's token ids must match exactly.

mod common;

use atelier_sd::model_folder::{ModelFolder, Variant};
use atelier_sd::pipeline::{GenerateOptions, StableDiffusion};
use atelier_sd::schedulers::SchedulerKind;
use burn::tensor::Tensor;
use common::{assert_close, fixture, reference, reference_json, TestBackend, PIPELINES};

const TOLERANCE: f32 = 1e-3;

fn load(name: &str) -> StableDiffusion<TestBackend> {
    let folder = ModelFolder::open(fixture(name), Variant::Auto).unwrap();
    StableDiffusion::load(&folder, &Default::default()).unwrap()
}

fn json(name: &str) -> serde_json::Value {
    atelier_sd::config::read_json(&reference_json(name), "reference").unwrap()
}

#[test]
fn prompts_tokenize_as_the_pipeline_tokenizer() {
    for name in PIPELINES {
        let sd = load(name);
        let json = json(name);
        let prompts: Vec<&str> = json["text_prompts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap())
            .collect();
        let (_, expected) = reference(name).read_i64("text.input_ids").unwrap();
        let ids = sd
            .token_ids(&prompts)
            .into_data()
            .convert::<i64>()
            .into_vec::<i64>()
            .unwrap();
        assert_eq!(ids, expected, "{name}");
    }
}

#[test]
fn text_to_image_matches_diffusers() {
    for name in PIPELINES {
        let sd = load(name);
        let json = json(name);
        let refs = reference(name);
        let device = Default::default();
        for scheduler in ["ddim", "euler", "dpmpp2m"] {
            let settings = &json["pipelines"][scheduler];
            let options = GenerateOptions {
                prompt: settings["prompt"].as_str().unwrap().to_string(),
                negative_prompt: settings["negative_prompt"].as_str().map(str::to_string),
                steps: settings["num_inference_steps"].as_u64().unwrap() as usize,
                guidance: settings["guidance_scale"].as_f64().unwrap(),
                scheduler: scheduler.parse::<SchedulerKind>().unwrap(),
            };
            let latents = refs
                .tensor::<TestBackend, 4>("pipeline.latents", &device)
                .unwrap();
            let mut steps_seen = 0;
            let image = sd
                .generate(&options, latents, |done, _| steps_seen = done)
                .unwrap();
            assert_eq!(steps_seen, options.steps);
            let image: Tensor<TestBackend, 3> = image.squeeze_dim(0);
            let expected = refs
                .tensor::<TestBackend, 3>(&format!("pipeline.{scheduler}.image"), &device)
                .unwrap();
            assert_close(
                &format!("{name}: {scheduler} image, {} steps", options.steps),
                image,
                expected,
                TOLERANCE,
            );
        }
    }
}
