//! The loss curve `atelier train` writes beside its outputs (`loss.png`): each
//! step's loss, thin and light, under a bold moving average. Drawn with plotters
//! into a pixel buffer and saved as PNG with the `image` crate; the text uses
//! DejaVu Sans, embedded (no system fonts or fontconfig needed).

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

/// DejaVu Sans 2.37, unmodified (Bitstream Vera licence, DejaVu's changes in the
/// public domain: `cli/assets/fonts/LICENSE-DejaVu.txt`).
static DEJAVU_SANS: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");
pub(crate) const FONT: &str = "sans-serif";

/// Steps in the moving average (fewer at the start of a run).
pub const AVERAGE_WINDOW: usize = 20;

const WIDTH: u32 = 1000;
const HEIGHT: u32 = 560;

pub(crate) fn register_fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // A font the crate embeds always parses; should it not, text is missing
        // and drawing reports the error.
        let _ = register_font(FONT, FontStyle::Normal, DEJAVU_SANS);
    });
}

/// The mean of up to `window` losses ending at each step (non-finite ones skipped;
/// `None` where the window holds no finite loss).
pub fn moving_average(losses: &[f64], window: usize) -> Vec<Option<f64>> {
    let window = window.max(1);
    (0..losses.len())
        .map(|i| {
            let start = (i + 1).saturating_sub(window);
            let finite: Vec<f64> = losses[start..=i]
                .iter()
                .copied()
                .filter(|v| v.is_finite())
                .collect();
            (!finite.is_empty()).then(|| finite.iter().sum::<f64>() / finite.len() as f64)
        })
        .collect()
}

/// Draws `losses` (step 1 first) under `title` and writes the PNG.
pub fn write_loss_png(path: &Path, title: &str, losses: &[f64]) -> Result<(), String> {
    if losses.is_empty() {
        return Err("no losses to draw".into());
    }
    let mut pixels = vec![255u8; (WIDTH * HEIGHT * 3) as usize];
    draw(&mut pixels, title, losses).map_err(|e| format!("drawing the loss curve: {e}"))?;
    save_rgb(path, WIDTH, HEIGHT, pixels)
}

/// Writes an RGB pixel buffer of `width` x `height` as a PNG.
pub(crate) fn save_rgb(
    path: &Path,
    width: u32,
    height: u32,
    pixels: Vec<u8>,
) -> Result<(), String> {
    let image = image::RgbImage::from_raw(width, height, pixels)
        .ok_or_else(|| "the picture's buffer has the wrong size".to_string())?;
    image
        .save(path)
        .map_err(|e| format!("failed to write `{}`: {e}", path.display()))
}

fn draw(pixels: &mut [u8], title: &str, losses: &[f64]) -> Result<(), Box<dyn std::error::Error>> {
    register_fonts();
    let steps = losses.len();
    let finite: Vec<f64> = losses.iter().copied().filter(|v| v.is_finite()).collect();
    let top = finite.iter().copied().fold(0.0f64, f64::max);
    // Headroom above the highest loss for the legend, so that it hides no point.
    let top = if top > 0.0 { top * 1.25 } else { 1.0 };
    let bottom = finite.iter().copied().fold(0.0f64, f64::min).min(0.0);

    // Room right of the last step, so that its dot is not cut in half.
    let x_pad = (steps as f64 * 0.02).max(0.25);
    let root = BitMapBackend::with_buffer(pixels, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 26))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(0f64..steps.max(1) as f64 + x_pad, bottom..top)?;
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

    // Thin and light; broken where a loss is not finite; dotted on short runs,
    // where a line alone hides which steps there were.
    let raw = RGBColor(140, 175, 225);
    let points: Vec<Option<(f64, f64)>> = losses
        .iter()
        .enumerate()
        .map(|(i, &v)| v.is_finite().then_some(((i + 1) as f64, v)))
        .collect();
    for (n, run) in points
        .split(|p| p.is_none())
        .filter(|run| !run.is_empty())
        .enumerate()
    {
        let series = chart.draw_series(LineSeries::new(
            run.iter().flatten().copied(),
            raw.stroke_width(1),
        ))?;
        if n == 0 {
            series.label("loss per step").legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], raw.stroke_width(2))
            });
        }
    }
    if steps <= 60 {
        chart.draw_series(
            points
                .iter()
                .flatten()
                .map(|&p| Circle::new(p, 3, raw.filled())),
        )?;
    }

    let window = AVERAGE_WINDOW.min(steps.max(1));
    let mean = RGBColor(200, 60, 20);
    chart
        .draw_series(LineSeries::new(
            moving_average(losses, window)
                .into_iter()
                .enumerate()
                .filter_map(|(i, v)| v.map(|v| ((i + 1) as f64, v))),
            mean.stroke_width(3),
        ))?
        .label(format!("mean of the last {window} steps"))
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], mean.stroke_width(3)));

    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font((FONT, 16))
        .background_style(WHITE.mix(0.9))
        .border_style(RGBColor(180, 180, 180))
        .margin(12)
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moving_average_is_trailing_and_skips_non_finite() {
        let avg = moving_average(&[1.0, 3.0, f64::NAN, 5.0], 2);
        assert_eq!(avg, vec![Some(1.0), Some(2.0), Some(3.0), Some(5.0)]);
        assert_eq!(moving_average(&[f64::NAN], 3), vec![None]);
    }

    #[test]
    fn renders_a_png() {
        // ATELIER_PLOT_DIR=/some/dir keeps the pictures to look at.
        let dir = tempfile::tempdir().unwrap();
        let out = std::env::var_os("ATELIER_PLOT_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| dir.path().to_path_buf());
        let path = out.join("loss.png");
        // A noisy, slowly falling curve like a diffusion run's single-step MSE.
        let mut state = 12345u64;
        let losses: Vec<f64> = (0..200)
            .map(|i| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = (state >> 11) as f64 / (1u64 << 53) as f64;
                let base = 0.15 + 0.1 * (-(i as f64) / 60.0).exp();
                base * (0.2 + 1.6 * u * u)
            })
            .collect();
        write_loss_png(&path, "training loss: lora <monet-style>", &losses).unwrap();
        // A short run with a non-finite loss: dots, and a gap in the line.
        let short = out.join("loss-short.png");
        write_loss_png(
            &short,
            "training loss: ti <demo-style>",
            &[0.3, 0.12, f64::NAN, 0.2],
        )
        .unwrap();
        assert!(image::open(&short).is_ok());
        assert!(write_loss_png(&out.join("none.png"), "x", &[]).is_err());
        let img = image::open(&path).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (WIDTH, HEIGHT));
        // The title's text is drawn (dark pixels in the top band), and so is the
        // moving average (its colour somewhere).
        let dark_in_title = (0..WIDTH)
            .flat_map(|x| (0..40).map(move |y| (x, y)))
            .filter(|&(x, y)| img.get_pixel(x, y).0.iter().all(|&c| c < 80))
            .count();
        assert!(
            dark_in_title > 200,
            "{dark_in_title} dark pixels in the title band"
        );
        assert!(img.pixels().any(|p| p.0 == [200, 60, 20]));
    }
}
