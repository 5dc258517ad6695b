//! `samples.png`: the generated images side by side, one row per sample set
//! (labelled with its method and style), one column per image, grouped under
//! their prompt.

use std::path::Path;

use image::{imageops, RgbImage};
use plotters::prelude::*;

use super::data::SampleGrid;
use super::palette::method_colour;
use crate::plot::{register_fonts, FONT};

const CELL: u32 = 160;
const GAP: u32 = 6;
const LABEL_WIDTH: u32 = 230;
const TITLE_HEIGHT: u32 = 56;
const HEADER_HEIGHT: u32 = 64;
/// Average advance of a 14 px DejaVu Sans character, for wrapping headers.
const CHAR_WIDTH: f64 = 7.6;

/// Draws the grid of `rows` (images read from `root`, the report folder) under
/// `title`; `prompts[p]` heads column group p. `methods[r]` colours row r's label.
pub fn write(
    path: &Path,
    root: &Path,
    title: &str,
    prompts: &[String],
    rows: &[SampleGrid],
    methods: &[String],
) -> Result<(), String> {
    let per_prompt = rows
        .iter()
        .flat_map(|r| r.images.iter().map(Vec::len))
        .max()
        .unwrap_or(0);
    if rows.is_empty() || per_prompt == 0 || prompts.is_empty() {
        return Err("no samples to show".into());
    }
    let columns = prompts.len() as u32 * per_prompt as u32;
    let group_gap = GAP * 3;
    let width = LABEL_WIDTH + columns * (CELL + GAP) + prompts.len() as u32 * group_gap;
    let height = TITLE_HEIGHT + HEADER_HEIGHT + rows.len() as u32 * (CELL + GAP) + GAP;
    let mut canvas = RgbImage::from_pixel(width, height, image::Rgb([255, 255, 255]));
    let cell_x = |p: usize, k: usize| {
        LABEL_WIDTH
            + p as u32 * (per_prompt as u32 * (CELL + GAP) + group_gap)
            + k as u32 * (CELL + GAP)
    };
    let row_y = |r: usize| TITLE_HEIGHT + HEADER_HEIGHT + r as u32 * (CELL + GAP);
    for (r, row) in rows.iter().enumerate() {
        for (p, images) in row.images.iter().enumerate() {
            for (k, file) in images.iter().enumerate() {
                let path = root.join(file);
                let img = image::open(&path)
                    .map_err(|e| format!("cannot read sample `{}`: {e}", path.display()))?
                    .to_rgb8();
                let img = imageops::resize(&img, CELL, CELL, imageops::FilterType::CatmullRom);
                imageops::overlay(&mut canvas, &img, cell_x(p, k) as i64, row_y(r) as i64);
            }
        }
    }
    let mut pixels = canvas.into_raw();
    {
        register_fonts();
        let area = BitMapBackend::with_buffer(&mut pixels, (width, height)).into_drawing_area();
        let text = |e: Box<dyn std::error::Error>| format!("drawing the sample grid: {e}");
        let ink = RGBColor(30, 30, 30);
        area.draw(&Text::new(
            title.to_string(),
            (16, 14),
            (FONT, 26).into_font().color(&ink),
        ))
        .map_err(|e| text(e.into()))?;
        let group_width = per_prompt as u32 * (CELL + GAP) - GAP;
        for (p, prompt) in prompts.iter().enumerate() {
            let lines = wrap(&format!("{}. {prompt}", p + 1), group_width, 3);
            for (l, line) in lines.iter().enumerate() {
                area.draw(&Text::new(
                    line.clone(),
                    (
                        cell_x(p, 0) as i32,
                        (TITLE_HEIGHT + 4 + l as u32 * 19) as i32,
                    ),
                    (FONT, 14).into_font().color(&ink),
                ))
                .map_err(|e| text(e.into()))?;
            }
        }
        for (r, row) in rows.iter().enumerate() {
            let colour = method_colour(methods.get(r).map(String::as_str).unwrap_or(""));
            let y = row_y(r) as i32;
            area.draw(&Rectangle::new(
                [(8, y), (14, y + CELL as i32)],
                colour.filled(),
            ))
            .map_err(|e| text(e.into()))?;
            for (l, line) in wrap(&row.label, LABEL_WIDTH - 36, 3).iter().enumerate() {
                area.draw(&Text::new(
                    line.clone(),
                    (24, y + 8 + l as i32 * 22),
                    (FONT, 18).into_font().color(&ink),
                ))
                .map_err(|e| text(e.into()))?;
            }
            area.draw(&Text::new(
                format!("sample job {}", row.sample_job),
                (24, y + CELL as i32 - 24),
                (FONT, 13).into_font().color(&RGBColor(110, 110, 110)),
            ))
            .map_err(|e| text(e.into()))?;
        }
        area.present().map_err(|e| text(e.into()))?;
    }
    crate::plot::save_rgb(path, width, height, pixels)
}

/// Splits `text` at spaces into at most `max_lines` lines of about `width` pixels;
/// the last one ends with `…` when the text does not fit.
fn wrap(text: &str, width: u32, max_lines: usize) -> Vec<String> {
    let per_line = ((width as f64 / CHAR_WIDTH) as usize).max(4);
    let mut lines: Vec<String> = Vec::new();
    let mut current = String::new();
    for word in text.split_whitespace() {
        let candidate = if current.is_empty() {
            word.to_string()
        } else {
            format!("{current} {word}")
        };
        if candidate.chars().count() <= per_line || current.is_empty() {
            current = candidate;
        } else {
            lines.push(std::mem::replace(&mut current, word.to_string()));
        }
    }
    if !current.is_empty() {
        lines.push(current);
    }
    if lines.len() > max_lines {
        lines.truncate(max_lines);
        let last = lines.last_mut().expect("max_lines >= 1");
        let keep: String = last.chars().take(per_line.saturating_sub(1)).collect();
        *last = format!("{keep}…");
    }
    lines
        .into_iter()
        .map(|l| {
            if l.chars().count() > per_line {
                let keep: String = l.chars().take(per_line - 1).collect();
                format!("{keep}…")
            } else {
                l
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::wrap;

    #[test]
    fn wraps_at_spaces_and_marks_what_is_cut() {
        assert_eq!(wrap("a b c", 1000, 2), vec!["a b c"]);
        let lines = wrap("one two three four five six seven", 80, 2);
        assert_eq!(lines.len(), 2);
        assert!(lines[1].ends_with('…'), "{lines:?}");
        assert!(wrap("averyveryverylongwordthatdoesnotfit", 40, 1)[0].ends_with('…'));
    }
}
