//! `comparison.png`: one panel per metric, one bar per sample set (coloured by
//! method, labelled by method and style), the bar's height its mean over the set's
//! images and the whiskers ± one standard deviation.

use std::path::Path;

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::data::{MetricSummary, Row};
use super::palette::method_colour;
use crate::plot::{register_fonts, save_rgb, FONT};

const WIDTH: u32 = 1200;
const PANEL_HEIGHT: u32 = 380;
const TITLE_HEIGHT: u32 = 60;

/// The metrics drawn, top to bottom: title, y-axis text, the value of a row.
type Metric = (&'static str, &'static str, fn(&Row) -> MetricSummary);

fn metrics() -> [Metric; 3] {
    [
        (
            "LPIPS to the nearest held-out image",
            "LPIPS (lower = closer)",
            |r: &Row| r.lpips_nearest,
        ),
        (
            "Mean LPIPS to the held-out images",
            "LPIPS (lower = closer)",
            |r: &Row| r.lpips_pairwise,
        ),
        (
            "CLIP score with the prompt",
            "CLIP score (higher = closer)",
            |r: &Row| r.clip_score,
        ),
    ]
}

/// `note`, when given, is a line under the title (what the figures cannot say).
pub fn write(path: &Path, title: &str, note: Option<&str>, rows: &[Row]) -> Result<(), String> {
    if rows.is_empty() {
        return Err("no evaluated sample sets to compare".into());
    }
    let height = TITLE_HEIGHT + PANEL_HEIGHT * 3;
    let mut pixels = vec![255u8; (WIDTH * height * 3) as usize];
    draw(&mut pixels, height, title, note, rows)
        .map_err(|e| format!("drawing the comparison: {e}"))?;
    save_rgb(path, WIDTH, height, pixels)
}

fn draw(
    pixels: &mut [u8],
    height: u32,
    title: &str,
    note: Option<&str>,
    rows: &[Row],
) -> Result<(), Box<dyn std::error::Error>> {
    register_fonts();
    let root = BitMapBackend::with_buffer(pixels, (WIDTH, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, body) = root.split_vertically(TITLE_HEIGHT);
    match note {
        None => {
            top.titled(title, (FONT, 28))?;
        }
        Some(note) => {
            let centre = (WIDTH / 2) as i32;
            let style = |size| {
                TextStyle::from((FONT, size).into_font()).pos(Pos::new(HPos::Center, VPos::Top))
            };
            top.draw(&Text::new(title, (centre, 10), style(26)))?;
            top.draw(&Text::new(note, (centre, 40), style(16)))?;
        }
    }
    let net = rows[0].lpips_net.clone();
    let labels: Vec<String> = rows.iter().map(Row::label).collect();
    let mut methods: Vec<&str> = Vec::new();
    for r in rows {
        if !methods.contains(&r.method.as_str()) {
            methods.push(&r.method);
        }
    }
    let panels = body.split_evenly((3, 1));
    for (panel_index, (panel, (caption, y_desc, value))) in panels.iter().zip(metrics()).enumerate()
    {
        let digits = if y_desc.starts_with("LPIPS") { 3 } else { 2 };
        let lpips = y_desc.starts_with("LPIPS");
        let caption = if lpips {
            format!("{caption} ({net})")
        } else {
            caption.to_string()
        };
        let highest = rows
            .iter()
            .map(|r| {
                let v = value(r);
                v.mean + v.std
            })
            .fold(0.0f64, f64::max);
        // Headroom over the highest whisker for the value labels and the legend.
        let top = if highest > 0.0 { highest * 1.6 } else { 1.0 };
        // A segmented range over 0..k has k + 1 segments (its end included).
        let last = (rows.len() as u32).max(2) - 1;
        let mut chart = ChartBuilder::on(panel)
            .caption(caption, (FONT, 20))
            .margin(14)
            .x_label_area_size(36)
            .y_label_area_size(80)
            .build_cartesian_2d((0..last).into_segmented(), 0f64..top)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .bold_line_style(RGBColor(225, 225, 225))
            .light_line_style(TRANSPARENT)
            .y_desc(y_desc)
            .axis_desc_style((FONT, 16))
            .label_style((FONT, 15))
            .x_labels(rows.len())
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => labels.get(*i as usize).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .y_label_formatter(&|y| format!("{y:.2}"))
            .draw()?;
        for method in &methods {
            let colour = method_colour(method);
            let bars = rows
                .iter()
                .enumerate()
                .filter(|(_, r)| r.method == *method)
                .map(|(i, r)| {
                    let i = i as u32;
                    let mut bar = Rectangle::new(
                        [
                            (SegmentValue::Exact(i), 0.0),
                            (SegmentValue::Exact(i + 1), value(r).mean),
                        ],
                        colour.mix(0.85).filled(),
                    );
                    bar.set_margin(0, 0, 18, 18);
                    bar
                });
            chart
                .draw_series(bars)?
                .label(*method)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 6), (x + 14, y + 6)], colour.filled())
                });
        }
        // Whiskers (± std) with caps, and the mean written above each bar.
        for (i, r) in rows.iter().enumerate() {
            let v = value(r);
            let x = SegmentValue::CenterOf(i as u32);
            let (low, high) = ((v.mean - v.std).max(0.0), v.mean + v.std);
            let ink = RGBColor(40, 40, 40);
            chart.draw_series(std::iter::once(PathElement::new(
                vec![(x.clone(), low), (x.clone(), high)],
                ink.stroke_width(2),
            )))?;
            for end in [low, high] {
                chart.draw_series(std::iter::once(
                    EmptyElement::at((x.clone(), end))
                        + PathElement::new(vec![(-8, 0), (8, 0)], ink.stroke_width(2)),
                ))?;
            }
            chart.draw_series(std::iter::once(
                EmptyElement::at((x.clone(), high))
                    + Text::new(
                        format!("{:.digits$} (n={})", v.mean, v.n),
                        (-34, -20),
                        (FONT, 14).into_font().color(&ink),
                    ),
            ))?;
        }
        if panel_index > 0 {
            continue;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font((FONT, 15))
            .background_style(WHITE.mix(0.9))
            .border_style(RGBColor(180, 180, 180))
            .margin(10)
            .draw()?;
    }
    root.present()?;
    Ok(())
}
