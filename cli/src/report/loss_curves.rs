//! `loss.png`: the training loss of every run of the experiment, each a faint line
//! of its per-step losses under a bold moving average, coloured by method.

use std::path::Path;

use plotters::prelude::*;

use super::data::TrainingCurve;
use super::palette::{method_colour, shade};
use crate::plot::{moving_average, register_fonts, save_rgb, AVERAGE_WINDOW, FONT};

const WIDTH: u32 = 1200;
const HEIGHT: u32 = 640;

pub fn write(path: &Path, title: &str, runs: &[TrainingCurve]) -> Result<(), String> {
    if runs.iter().all(|r| r.losses.is_empty()) {
        return Err("no training losses to draw".into());
    }
    let mut pixels = vec![255u8; (WIDTH * HEIGHT * 3) as usize];
    draw(&mut pixels, title, runs).map_err(|e| format!("drawing the loss curves: {e}"))?;
    save_rgb(path, WIDTH, HEIGHT, pixels)
}

fn draw(
    pixels: &mut [u8],
    title: &str,
    runs: &[TrainingCurve],
) -> Result<(), Box<dyn std::error::Error>> {
    register_fonts();
    let steps = runs.iter().map(|r| r.losses.len()).max().unwrap_or(1);
    let finite = || {
        runs.iter()
            .flat_map(|r| r.losses.iter().copied())
            .filter(|v| v.is_finite())
    };
    let top = finite().fold(0.0f64, f64::max);
    // Headroom for the legend, which can be tall with many runs.
    let top = if top > 0.0 { top * 1.35 } else { 1.0 };
    let bottom = finite().fold(0.0f64, f64::min).min(0.0);
    let root = BitMapBackend::with_buffer(pixels, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 26))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(0f64..steps as f64 * 1.02 + 0.5, bottom..top)?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc("MSE loss")
        .axis_desc_style((FONT, 18))
        .label_style((FONT, 15))
        .light_line_style(TRANSPARENT)
        .bold_line_style(RGBColor(225, 225, 225))
        .x_labels(steps.clamp(2, 11))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.3}"))
        .draw()?;

    let window = AVERAGE_WINDOW.min(steps.max(1));
    for (i, run) in runs.iter().enumerate() {
        let same: Vec<usize> = (0..runs.len())
            .filter(|&j| runs[j].method == run.method)
            .collect();
        let nth = same.iter().position(|&j| j == i).unwrap_or(0);
        let colour = shade(method_colour(&run.method), nth, same.len());
        let raw: Vec<(f64, f64)> = run
            .losses
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_finite())
            .map(|(s, &v)| ((s + 1) as f64, v))
            .collect();
        chart.draw_series(LineSeries::new(raw, colour.mix(0.25).stroke_width(1)))?;
        chart
            .draw_series(LineSeries::new(
                moving_average(&run.losses, window)
                    .into_iter()
                    .enumerate()
                    .filter_map(|(s, v)| v.map(|v| ((s + 1) as f64, v))),
                colour.stroke_width(3),
            ))?
            .label(format!("{} (job {})", run.label(), run.train_job))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], colour.stroke_width(3))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font((FONT, 15))
        .background_style(WHITE.mix(0.9))
        .border_style(RGBColor(180, 180, 180))
        .margin(10)
        .draw()?;
    root.draw(&Text::new(
        format!("bold: mean of the last {window} steps; faint: each step"),
        (90, HEIGHT as i32 - 22),
        (FONT, 14).into_font().color(&RGBColor(90, 90, 90)),
    ))?;
    root.present()?;
    Ok(())
}
