//! Summary statistics of per-image metric values.

use serde::{Deserialize, Serialize};

/// Mean, sample standard deviation (n - 1; 0 for one value) and count.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub mean: f64,
    pub std: f64,
    pub n: usize,
}

impl Summary {
    /// `None` for no values.
    pub fn of(values: &[f64]) -> Option<Summary> {
        let n = values.len();
        if n == 0 {
            return None;
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let std = if n > 1 {
            (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        } else {
            0.0
        };
        Some(Summary { mean, std, n })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_sample_std() {
        assert_eq!(Summary::of(&[]), None);
        assert_eq!(
            Summary::of(&[2.0]),
            Some(Summary {
                mean: 2.0,
                std: 0.0,
                n: 1
            })
        );
        let s = Summary::of(&[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!((s.mean, s.n), (2.5, 4));
        assert!((s.std - 1.2909944487358056).abs() < 1e-15);
    }
}
