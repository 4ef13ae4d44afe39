//! The one percentile every benchmark of the project prints (the engine's,
//! `policy bench`, and the end-to-end ones in msp-tests): here because every
//! one of them can depend on the engine, and the engine on nothing of theirs.

/// The nearest-rank `p`th percentile (0 ≤ `p` ≤ 100) of `sorted` (ascending):
/// the smallest sample with at least `p`% of the samples at or below it, so
/// always a sample that was measured, never an interpolation. p0 is the
/// minimum, p100 the maximum; p50 of two samples is the smaller one. `None`
/// when there are no samples.
pub fn percentile<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    // A NaN or negative `p` casts to rank 0, clamped to the first sample.
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, n) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_samples_no_percentile() {
        assert_eq!(percentile::<u32>(&[], 50.0), None);
        assert_eq!(percentile::<u32>(&[], 0.0), None);
    }

    #[test]
    fn nearest_rank() {
        let hundred: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&hundred, 50.0), Some(50));
        assert_eq!(percentile(&hundred, 99.0), Some(99));
        assert_eq!(percentile(&hundred, 99.5), Some(100));
        let ten: Vec<u32> = (1..=10).collect();
        assert_eq!(percentile(&ten, 90.0), Some(9));
        assert_eq!(percentile(&ten, 91.0), Some(10));
    }

    #[test]
    fn p50_of_two_is_the_smaller() {
        assert_eq!(percentile(&[3, 7], 50.0), Some(3));
        assert_eq!(percentile(&[3, 7], 51.0), Some(7));
    }

    #[test]
    fn the_ends_and_out_of_range() {
        let s = [1, 2, 3];
        assert_eq!(percentile(&s, 0.0), Some(1));
        assert_eq!(percentile(&s, 100.0), Some(3));
        assert_eq!(percentile(&s, -5.0), Some(1));
        assert_eq!(percentile(&s, 250.0), Some(3));
        assert_eq!(percentile(&s, f64::NAN), Some(1));
        assert_eq!(percentile(&[42], 99.0), Some(42));
    }
}
