//! Request latencies for the benchmarks: an HDR histogram (3 significant digits, 1 µs to
//! 10 minutes), so a long run takes constant memory and workers merge their counts.

use hdrhistogram::Histogram;

/// Latencies in microseconds (the histogram is made at the first record).
#[derive(Debug, Clone, Default)]
pub struct Latencies(Option<Histogram<u64>>);

impl Latencies {
    fn histogram(&mut self) -> Option<&mut Histogram<u64>> {
        if self.0.is_none() {
            // Constant bounds and precision, within the crate's limits.
            self.0 = Histogram::new_with_bounds(1, 600_000_000, 3).ok();
        }
        self.0.as_mut()
    }

    /// Records one latency (clamped into the histogram's range).
    pub fn record(&mut self, us: u64) {
        if let Some(h) = self.histogram() {
            h.saturating_record(us.max(1));
        }
    }

    /// Adds another worker's latencies.
    pub fn merge(&mut self, other: &Latencies) {
        if let (Some(theirs), Some(ours)) = (other.0.as_ref(), self.histogram()) {
            // Both have the same bounds, so adding cannot fail.
            let _ = ours.add(theirs);
        }
    }

    /// How many were recorded.
    pub fn count(&self) -> u64 {
        self.0.as_ref().map_or(0, Histogram::len)
    }

    /// The latency at quantile `q` (0.0 to 1.0), in milliseconds; 0 when none.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        match &self.0 {
            Some(h) if !h.is_empty() => h.value_at_quantile(q) as f64 / 1000.0,
            _ => 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_of_merged_workers() {
        let mut a = Latencies::default();
        let mut b = Latencies::default();
        for i in 1..=50 {
            a.record(i * 1000);
        }
        for i in 51..=100 {
            b.record(i * 1000);
        }
        a.merge(&b);
        assert_eq!(a.count(), 100);
        let close = |got: f64, want: f64| (got - want).abs() <= want * 0.001;
        assert!(close(a.quantile_ms(0.5), 50.0), "{}", a.quantile_ms(0.5));
        assert!(close(a.quantile_ms(0.99), 99.0), "{}", a.quantile_ms(0.99));
        assert!(close(a.quantile_ms(1.0), 100.0), "{}", a.quantile_ms(1.0));
        assert_eq!(Latencies::default().quantile_ms(0.5), 0.0);
    }
}
