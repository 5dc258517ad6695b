//! CLIP's text side for scoring: atelier-sd's text encoder, the pooled token and its
//! batch of ids.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

/// The position transformers' `CLIPTextTransformer` pools (`pooler_output`): with the
/// legacy `eos_token_id` 2 the first largest id (the end token of CLIP's vocabulary),
/// otherwise the first `eos_token_id` (position 0 when there is none, as `argmax` of an
/// all-false row).
pub fn pooled_position(ids: &[u32], eos_token_id: i64) -> usize {
    if eos_token_id == 2 {
        let max = ids.iter().copied().max().unwrap_or(0);
        ids.iter().position(|&id| id == max).unwrap_or(0)
    } else {
        ids.iter()
            .position(|&id| i64::from(id) == eos_token_id)
            .unwrap_or(0)
    }
}

/// Rows of ids padded with `pad_id` to the longest: `[rows, longest]`. The text
/// encoder's mask is causal, so padding after a row's pooled token does not change it.
pub fn padded_ids<B: Backend>(
    rows: &[Vec<u32>],
    pad_id: u32,
    device: &B::Device,
) -> Tensor<B, 2, Int> {
    let longest = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut values = Vec::with_capacity(rows.len() * longest);
    for row in rows {
        values.extend(row.iter().map(|&id| id as i64));
        values.extend(std::iter::repeat_n(pad_id as i64, longest - row.len()));
    }
    Tensor::from_data(TensorData::new(values, [rows.len(), longest]), device)
}

/// hidden [batch, seq, H] -> [batch, H], row b at `positions[b]`.
pub fn gather_rows<B: Backend>(hidden: Tensor<B, 3>, positions: &[usize]) -> Tensor<B, 2> {
    let [batch, seq, width] = hidden.dims();
    let device = hidden.device();
    let index: Vec<i64> = positions
        .iter()
        .enumerate()
        .map(|(b, &p)| (b * seq + p) as i64)
        .collect();
    let index = Tensor::<B, 1, Int>::from_data(TensorData::new(index, [batch]), &device);
    hidden.reshape([batch * seq, width]).select(0, index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooling_follows_transformers() {
        // <bos> a b <eos> <pad=eos>
        let ids = [49406, 320, 1125, 49407, 49407];
        assert_eq!(pooled_position(&ids, 49407), 3);
        assert_eq!(pooled_position(&ids, 2), 3);
        // An added token (id past the vocabulary) moves the legacy rule, not the other.
        let ids = [49406, 49408, 49407];
        assert_eq!(pooled_position(&ids, 2), 1);
        assert_eq!(pooled_position(&ids, 49407), 2);
        // No end token: argmax of an all-false row.
        assert_eq!(pooled_position(&[49406, 320], 49407), 0);
    }

    #[test]
    fn rows_are_padded_and_gathered() {
        type B = burn::backend::NdArray<f32>;
        let device = Default::default();
        let ids = padded_ids::<B>(&[vec![1, 2, 3], vec![4]], 9, &device);
        assert_eq!(
            ids.into_data().convert::<i64>().into_vec::<i64>().unwrap(),
            vec![1, 2, 3, 4, 9, 9]
        );
        let hidden = Tensor::<B, 1, Int>::arange(0..12, &device)
            .float()
            .reshape([2, 3, 2]);
        let rows = gather_rows(hidden, &[2, 0]);
        assert_eq!(
            rows.into_data().convert::<f32>().into_vec::<f32>().unwrap(),
            vec![4.0, 5.0, 6.0, 7.0]
        );
    }
}
