//! Latency histograms shared by the write path and the appliers (and, later, replica read
//! latency): microsecond HDR histograms behind a mutex, read as percentiles in milliseconds.
//!
//! Owns: `LatencyHistogram`. May import: hdrhistogram, parking_lot; nothing of ours.

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use std::time::Duration;

/// Recorded durations from 1 µs to 60 s at 2 significant digits.
pub struct LatencyHistogram {
    inner: Mutex<Histogram<u64>>,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHistogram {
    pub fn new() -> Self {
        // Bounds and precision are constants within hdrhistogram's limits.
        let h = Histogram::new_with_bounds(1, 60_000_000, 2)
            .unwrap_or_else(|_| Histogram::new(2).expect("2 significant digits is valid"));
        LatencyHistogram {
            inner: Mutex::new(h),
        }
    }

    pub fn record(&self, d: Duration) {
        let us = (d.as_micros() as u64).clamp(1, 60_000_000);
        // Within bounds by the clamp above.
        let _ = self.inner.lock().record(us);
    }

    pub fn count(&self) -> u64 {
        self.inner.lock().len()
    }

    /// The `q` quantile (0..=1) in milliseconds; 0 when nothing was recorded.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        let h = self.inner.lock();
        if h.is_empty() {
            return 0.0;
        }
        h.value_at_quantile(q) as f64 / 1000.0
    }

    /// "p50/p99" in milliseconds, for admin tables.
    pub fn summary(&self) -> String {
        format!("{:.2}/{:.2}", self.quantile_ms(0.5), self.quantile_ms(0.99))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_in_milliseconds() {
        let h = LatencyHistogram::new();
        assert_eq!(h.summary(), "0.00/0.00");
        for us in 1..=100u64 {
            h.record(Duration::from_micros(us * 100));
        }
        assert_eq!(h.count(), 100);
        assert!(
            (h.quantile_ms(0.5) - 5.0).abs() < 0.1,
            "{}",
            h.quantile_ms(0.5)
        );
        assert!(
            (h.quantile_ms(0.99) - 9.9).abs() < 0.1,
            "{}",
            h.quantile_ms(0.99)
        );
        h.record(Duration::from_secs(3600));
        assert!(h.quantile_ms(1.0) <= 60_000.0 * 1.01);
    }
}
