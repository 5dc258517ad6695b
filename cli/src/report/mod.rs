//! What `atelier report` writes: the comparison of an experiment's methods as
//! pictures and text.
//!
//! # Layout
//! - `data`: the report's content (`report.json`), gathered from the coordinator
//!   by the `report` command.
//! - `palette`: one colour per method, shared by every picture.
//! - `comparison`: `comparison.png`, a bar chart per metric with error bars.
//! - `samples_grid`: `samples.png`, rows of methods/styles, columns of prompts.
//! - `loss_curves`: `loss.png`, every training run's loss.
//! - `markdown`: `report.md`.

pub mod comparison;
pub mod data;
pub mod loss_curves;
pub mod markdown;
mod palette;
pub mod samples_grid;

pub use data::{MetricSummary, Report, Row, SampleGrid, TrainingCurve};

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(mean: f64, std: f64) -> MetricSummary {
        MetricSummary { mean, std, n: 8 }
    }

    fn row(method: &str, style: &str, i: i64) -> Row {
        let f = i as f64;
        Row {
            method: method.into(),
            token: Some(format!("<{style}-style>")),
            train_job: Some(i),
            sample_job: 10 + i,
            sample_job_name: format!("sample-{method}-{style}"),
            eval_job: 20 + i,
            eval_job_name: format!("eval-{method}-{style}"),
            lpips_net: "alex".into(),
            lpips_nearest: summary(0.30 + 0.03 * f, 0.04),
            lpips_pairwise: summary(0.45 + 0.02 * f, 0.05),
            clip_score: summary(22.0 + f, 1.5),
        }
    }

    /// The three pictures from made-up numbers; `ATELIER_PLOT_DIR=/some/dir` keeps
    /// them to look at.
    #[test]
    fn renders_the_three_pictures() {
        let dir = tempfile::tempdir().unwrap();
        let out = std::env::var_os("ATELIER_PLOT_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| dir.path().to_path_buf());
        let rows = vec![
            row("lora", "monet", 1),
            row("lora", "vangogh", 2),
            row("dreambooth", "anime", 3),
            row("ti", "anime", 4),
        ];
        let path = out.join("comparison.png");
        comparison::write(&path, "study (e1): methods compared", None, &rows).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        // Each method's colour is somewhere in the bars.
        for method in ["lora", "dreambooth", "ti"] {
            // Bars are drawn at 85 % opacity over white.
            let c = palette::method_colour(method);
            let blended = |v: u8| (v as f64 * 0.85 + 255.0 * 0.15).round() as u8;
            let want = [blended(c.0), blended(c.1), blended(c.2)];
            assert!(
                img.pixels()
                    .any(|p| p.0.iter().zip(want).all(|(a, b)| a.abs_diff(b) <= 2)),
                "no {method} bar"
            );
        }
        assert!(comparison::write(&out.join("none.png"), "x", None, &[]).is_err());

        let runs: Vec<TrainingCurve> = (0..3)
            .map(|i| TrainingCurve {
                train_job: i,
                train_job_name: format!("t{i}"),
                method: ["lora", "lora", "ti"][i as usize].into(),
                token: "<monet-style>".into(),
                losses: (0..120)
                    .map(|s| {
                        0.2 + 0.1 * (-(s as f64) / 40.0).exp()
                            + 0.02 * ((s * 7 + i as usize) % 5) as f64
                    })
                    .collect(),
            })
            .collect();
        loss_curves::write(&out.join("loss.png"), "study (e1): training loss", &runs).unwrap();

        // A grid of two rows, two prompts, two images each.
        let samples = out.join("samples");
        std::fs::create_dir_all(&samples).unwrap();
        let mut grid = Vec::new();
        for r in 0..2u8 {
            let mut images = Vec::new();
            for p in 0..2u8 {
                let mut files = Vec::new();
                for k in 0..2u8 {
                    let file = format!("samples/r{r}p{p}k{k}.png");
                    image::RgbImage::from_fn(32, 32, |x, y| {
                        image::Rgb([x as u8 * 8, y as u8 * 8, 60 * (r + p + k)])
                    })
                    .save(out.join(&file))
                    .unwrap();
                    files.push(file);
                }
                images.push(files);
            }
            grid.push(SampleGrid {
                label: ["lora · monet", "textual inversion · anime"][r as usize].into(),
                sample_job: r as i64,
                images,
            });
        }
        let prompts = vec![
            "a painting in the style of {token}".to_string(),
            "a harbour at dawn with boats and mist, in the style of {token}".to_string(),
        ];
        let path = out.join("samples.png");
        samples_grid::write(
            &path,
            &out,
            "study (e1): samples",
            &prompts,
            &grid,
            &["lora".into(), "ti".into()],
        )
        .unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        assert!(img.width() > 4 * 160 && img.height() > 2 * 160);
        let missing = SampleGrid {
            label: "x".into(),
            sample_job: 9,
            images: vec![vec!["samples/nope.png".into()]],
        };
        let e = samples_grid::write(&path, &out, "x", &prompts, &[missing], &[]).unwrap_err();
        assert!(e.contains("nope.png"), "{e}");

        let report = Report {
            experiment: "study".into(),
            experiment_id: 1,
            created_at_ms: 0,
            prompts,
            rows,
            trainings: runs,
            grid,
            missing: vec!["eval job 9 `eval-x` is failed: no weights".into()],
            note: Some("random networks".into()),
        };
        let md = markdown::render(
            &report,
            &markdown::Pictures {
                comparison: true,
                samples: true,
                loss: true,
            },
        );
        assert!(
            md.contains("| dreambooth | `<anime-style>` | 8 | 0.3900 ± 0.0400 |"),
            "{md}"
        );
        assert!(md.contains("## Not in this report\n\n- eval job 9"), "{md}");
        assert!(
            md.contains("(experiment e1)\n\n> random networks\n"),
            "{md}"
        );
    }
}
