//! `report.md`: the report's numbers as tables, with the pictures inline.

use std::fmt::Write;

use super::data::{MetricSummary, Report};

/// The pictures written beside `report.md` (the ones that exist).
pub struct Pictures {
    pub comparison: bool,
    pub samples: bool,
    pub loss: bool,
}

pub fn render(report: &Report, pictures: &Pictures) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# {} (experiment e{})\n",
        report.experiment, report.experiment_id
    );
    if let Some(note) = &report.note {
        let _ = writeln!(md, "> {note}\n");
    }
    if report.rows.is_empty() {
        md.push_str("No evaluation has finished yet.\n\n");
    } else {
        let net = &report.rows[0].lpips_net;
        md.push_str(
            "LPIPS compares each generated image with the trainset's held-out images \
             (lower = closer in style); CLIP score compares it with its prompt \
             (higher = closer). Mean ± standard deviation over the images of a set.\n\n",
        );
        if pictures.comparison {
            md.push_str("![comparison](comparison.png)\n\n");
        }
        let _ = writeln!(
            md,
            "| method | token | images | LPIPS nearest ({net}) | LPIPS mean ({net}) | CLIP score | sample job | eval job |"
        );
        md.push_str("|---|---|---|---|---|---|---|---|\n");
        for r in &report.rows {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} `{}` | {} `{}` |",
                r.method,
                r.token.as_deref().map(code).unwrap_or_else(|| "-".into()),
                r.clip_score.n,
                pm(&r.lpips_nearest, 4),
                pm(&r.lpips_pairwise, 4),
                pm(&r.clip_score, 2),
                r.sample_job,
                r.sample_job_name,
                r.eval_job,
                r.eval_job_name,
            );
        }
        md.push('\n');
    }
    if pictures.samples {
        md.push_str("## Samples\n\n");
        for (i, p) in report.prompts.iter().enumerate() {
            let _ = writeln!(md, "{}. {}", i + 1, code(p));
        }
        md.push_str("\n![samples](samples.png)\n\n");
    }
    if !report.trainings.is_empty() {
        md.push_str("## Training\n\n");
        if pictures.loss {
            md.push_str("![loss](loss.png)\n\n");
        }
        md.push_str(
            "| train job | method | token | steps | mean loss: first → last steps (up to 50 each) |\n",
        );
        md.push_str("|---|---|---|---|---|\n");
        for t in &report.trainings {
            let window = (t.losses.len() / 2).clamp(1, 50).min(t.losses.len());
            let first = mean(&t.losses[..window]);
            let last = mean(&t.losses[t.losses.len() - window..]);
            let _ = writeln!(
                md,
                "| {} `{}` | {} | {} | {} | {first:.4} → {last:.4} ({window} each) |",
                t.train_job,
                t.train_job_name,
                t.method,
                code(&t.token),
                t.losses.len(),
            );
        }
        md.push('\n');
    }
    if !report.missing.is_empty() {
        md.push_str("## Not in this report\n\n");
        for m in &report.missing {
            let _ = writeln!(md, "- {m}");
        }
        md.push('\n');
    }
    md
}

fn pm(s: &MetricSummary, digits: usize) -> String {
    format!("{:.digits$} ± {:.digits$}", s.mean, s.std)
}

fn code(s: &str) -> String {
    format!("`{}`", s.replace('`', "'"))
}

fn mean(v: &[f64]) -> f64 {
    let finite: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if finite.is_empty() {
        f64::NAN
    } else {
        finite.iter().sum::<f64>() / finite.len() as f64
    }
}
