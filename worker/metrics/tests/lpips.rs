//! LPIPS against the `lpips` package (fixtures from `tools/make_eval_fixtures.py`): the
//! same formula backbone and the package's linear weights, 10 image pairs of different
//! sizes, absolute tolerance 1e-5.

mod common;

use std::path::{Path, PathBuf};

use atelier_metrics::images::{load_rgb, to_signed_tensor};
use atelier_metrics::lpips::{Lpips, LpipsNet};
use atelier_metrics::testing::{formula_backbone, write_test_weights};
use atelier_metrics::MetricsError;
use common::{assert_within, fixture, floats, max_diff, read_json, TestBackend};

const TOLERANCE: f32 = 1e-5;

fn lpips_dir() -> PathBuf {
    fixture("lpips")
}

fn lin_weights(net: LpipsNet) -> PathBuf {
    lpips_dir().join(format!("lin_{net}.safetensors"))
}

fn load(net: LpipsNet, dir: &Path) -> Lpips<TestBackend> {
    let path = dir.join(net.file_name());
    write_test_weights(&path, net, &lin_weights(net)).unwrap();
    Lpips::load(&path, net, &Default::default()).unwrap()
}

fn pairs() -> Vec<(image::RgbImage, image::RgbImage)> {
    let reference = read_json(&lpips_dir().join("reference.json"));
    reference["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let a = load_rgb(&lpips_dir().join(p["a"].as_str().unwrap())).unwrap();
            let b = load_rgb(&lpips_dir().join(p["b"].as_str().unwrap())).unwrap();
            assert_eq!(a.height() as u64, p["height"].as_u64().unwrap());
            assert_eq!(a.width() as u64, p["width"].as_u64().unwrap());
            (a, b)
        })
        .collect()
}

fn golden(net: LpipsNet) {
    let dir = tempfile::tempdir().unwrap();
    let lpips = load(net, dir.path());
    assert_eq!(lpips.net(), net);
    let expected =
        floats(&read_json(&lpips_dir().join("reference.json"))["distances"][net.to_string()]);
    let device = Default::default();
    let mut actual = Vec::new();
    for (a, b) in pairs() {
        let a = to_signed_tensor::<TestBackend>(&[a], &device).unwrap();
        let b = to_signed_tensor::<TestBackend>(&[b], &device).unwrap();
        actual.extend(lpips.distance(a, b).unwrap());
    }
    eprintln!("{net}: {actual:?}");
    assert_eq!(actual.len(), 10);
    assert_within(
        &format!("LPIPS {net}, 10 pairs"),
        max_diff(&actual, &expected),
        TOLERANCE,
    );
}

#[test]
fn alex_matches_the_lpips_package() {
    golden(LpipsNet::Alex);
}

#[test]
fn vgg_matches_the_lpips_package() {
    golden(LpipsNet::Vgg);
}

#[test]
fn pairs_in_one_batch_match_pairs_one_by_one() {
    let dir = tempfile::tempdir().unwrap();
    let lpips = load(LpipsNet::Alex, dir.path());
    let expected = floats(&read_json(&lpips_dir().join("reference.json"))["distances"]["alex"]);
    let device = Default::default();
    // Pair 9 both ways and pair 9 against itself: LPIPS is symmetric.
    let (a, b) = pairs().swap_remove(9);
    let left =
        to_signed_tensor::<TestBackend>(&[a.clone(), b.clone(), a.clone()], &device).unwrap();
    let right = to_signed_tensor::<TestBackend>(&[b, a.clone(), a], &device).unwrap();
    let d = lpips.distance(left, right).unwrap();
    assert_within(
        "batched pairs",
        max_diff(&d, &[expected[9], expected[9], 0.0]),
        TOLERANCE,
    );
}

#[test]
fn formula_weights_match_the_fixture_script() {
    let reference = read_json(&lpips_dir().join("reference.json"));
    for net in [LpipsNet::Alex, LpipsNet::Vgg] {
        let checks = &reference["weight_checks"][net.to_string()];
        let tensors = formula_backbone(net);
        assert_eq!(tensors.len(), checks.as_object().unwrap().len());
        for (name, _, values) in tensors {
            let check = &checks[&name];
            assert_eq!(values[..4], floats(&check["first"])[..], "{name}");
            let sum: f64 = values.iter().map(|v| *v as f64).sum();
            let expected = check["sum"].as_f64().unwrap();
            assert!(
                (sum - expected).abs() <= 1e-9 * values.len() as f64,
                "{name}: sum {sum} vs {expected}"
            );
        }
    }
}

#[test]
fn weights_of_the_other_backbone_name_tensor_file_and_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let vgg_file = dir.path().join("lpips_vgg.safetensors");
    write_test_weights(&vgg_file, LpipsNet::Vgg, &lin_weights(LpipsNet::Vgg)).unwrap();
    let err = Lpips::<TestBackend>::load(&vgg_file, LpipsNet::Alex, &Default::default())
        .unwrap_err()
        .to_string();
    eprintln!("{err}");
    assert!(err.contains(&format!("`{}`", vgg_file.display())), "{err}");
    assert!(err.contains("`net.slice1.0.weight`"), "{err}");
    assert!(
        err.contains("[64, 3, 3, 3]") && err.contains("[64, 3, 11, 11]"),
        "{err}"
    );
}

#[test]
fn missing_weights_say_how_to_convert() {
    let dir = tempfile::tempdir().unwrap();
    for (net, torchvision) in [
        (LpipsNet::Alex, "alexnet-owt-7be5be79.pth"),
        (LpipsNet::Vgg, "vgg16-397923af.pth"),
    ] {
        let path = dir.path().join(net.file_name());
        let err = Lpips::<TestBackend>::load(&path, net, &Default::default()).unwrap_err();
        assert!(matches!(err, MetricsError::MissingLpipsWeights { .. }));
        let message = err.to_string();
        eprintln!("{message}");
        assert!(
            message.contains(&format!("`{}` not found", path.display())),
            "{message}"
        );
        let command = format!(
            "python tools/convert_lpips_weights.py --net {net} --torchvision {torchvision} --lpips {net}.pth -o {}",
            path.display()
        );
        assert!(message.contains(&command), "{message}");
    }
}

#[test]
fn a_corrupt_weight_file_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lpips_alex.safetensors");
    std::fs::write(&path, b"not a safetensors file").unwrap();
    let err = Lpips::<TestBackend>::load(&path, LpipsNet::Alex, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains(&path.display().to_string()), "{err}");
}

#[test]
fn bad_inputs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let lpips = load(LpipsNet::Alex, dir.path());
    let device = Default::default();
    let image = |w, h| image::RgbImage::new(w, h);
    let a = to_signed_tensor::<TestBackend>(&[image(40, 32)], &device).unwrap();
    let b = to_signed_tensor::<TestBackend>(&[image(32, 40)], &device).unwrap();
    let err = lpips.distance(a, b).unwrap_err().to_string();
    assert!(
        err.contains("[1, 3, 32, 40]") && err.contains("[1, 3, 40, 32]"),
        "{err}"
    );
    let small = to_signed_tensor::<TestBackend>(&[image(30, 40)], &device).unwrap();
    let err = lpips
        .distance(small.clone(), small)
        .unwrap_err()
        .to_string();
    assert!(err.contains("30x40") && err.contains("31x31"), "{err}");
}

#[test]
fn files_naming_the_linear_layers_lins_load_too() {
    // `lpips.LPIPS().state_dict()` names each linear layer twice (`lin0.`, `lins.0.`);
    // a file may keep either name, or both.
    let dir = tempfile::tempdir().unwrap();
    let original = dir.path().join("lpips_alex.safetensors");
    write_test_weights(&original, LpipsNet::Alex, &lin_weights(LpipsNet::Alex)).unwrap();
    let file = atelier_sd::weights::SafetensorsFile::open(&original).unwrap();
    let mut names: Vec<String> = file.names().map(str::to_string).collect();
    names.sort();
    let tensors = |rename: &dyn Fn(&str) -> Vec<String>| {
        let mut out = Vec::new();
        for name in &names {
            let (shape, values) = file.read_f32(name).unwrap();
            for new_name in rename(name) {
                out.push((new_name, shape.clone(), values.clone()));
            }
        }
        out
    };
    let as_lins = |name: &str| match name.strip_prefix("lin") {
        Some(rest) if !rest.starts_with('s') => vec![format!("lins.{rest}")],
        _ => vec![name.to_string()],
    };
    let both = |name: &str| {
        let mut out = vec![name.to_string()];
        if let Some(rest) = name.strip_prefix("lin") {
            out.push(format!("lins.{rest}"));
        }
        out
    };
    let expected = floats(&read_json(&lpips_dir().join("reference.json"))["distances"]["alex"])[0];
    let (a, b) = pairs().swap_remove(0);
    let device = Default::default();
    for (name, rename) in [
        ("lins", &as_lins as &dyn Fn(&str) -> Vec<String>),
        ("both", &both),
    ] {
        let path = dir.path().join(format!("{name}.safetensors"));
        atelier_sd::weights::write_f32_safetensors(&path, &tensors(rename), &[]).unwrap();
        let lpips = Lpips::<TestBackend>::load(&path, LpipsNet::Alex, &device).unwrap();
        let d = lpips
            .distance(
                to_signed_tensor(std::slice::from_ref(&a), &device).unwrap(),
                to_signed_tensor(std::slice::from_ref(&b), &device).unwrap(),
            )
            .unwrap();
        assert_within(
            &format!("pair 0 with `{name}` keys"),
            (d[0] - expected).abs(),
            TOLERANCE,
        );
    }
}
