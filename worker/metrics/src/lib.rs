//! Image metrics for atelier's evaluation jobs: LPIPS and CLIP score, in burn.
