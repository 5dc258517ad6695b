//! One colour per method, the same in every picture of a report.

use plotters::style::RGBColor;

/// Colour-blind-safe (Okabe–Ito) colours for the study's methods.
pub fn method_colour(method: &str) -> RGBColor {
    match method {
        "lora" => RGBColor(0, 114, 178),
        "dreambooth" => RGBColor(213, 94, 0),
        "ti" => RGBColor(0, 158, 115),
        "base" => RGBColor(120, 120, 120),
        other => EXTRA[other.bytes().map(usize::from).sum::<usize>() % EXTRA.len()],
    }
}

const EXTRA: [RGBColor; 4] = [
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(240, 228, 66),
];

/// Distinct colours for the n-th of several curves of one method.
pub fn shade(base: RGBColor, i: usize, n: usize) -> RGBColor {
    if n <= 1 {
        return base;
    }
    // From the base colour towards a lighter one.
    let t = i as f64 / (n as f64) * 0.6;
    let mix = |c: u8| (c as f64 + (235.0 - c as f64) * t).round() as u8;
    RGBColor(mix(base.0), mix(base.1), mix(base.2))
}
