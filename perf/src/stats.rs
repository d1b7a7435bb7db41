//! Latency histograms (HDR), counters, and the pacer that corrects for coordinated omission.
//!
//! Coordinated omission: a load generator that waits for a slow response before sending the
//! next message stops measuring exactly when the system is slow, so its percentiles look better
//! than what a user at that rate would see. At a fixed rate the pacer gives every message an
//! intended send time on a fixed schedule (start + i / rate), and latency is measured from that
//! time, not from when the message was actually handed to the socket: a stall makes every message
//! scheduled during it late, and each of them records the wait. At maximum rate there is no
//! schedule; the intended time is the moment the message is generated.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::constants::LATENCY_US_MAX;

/// Wall-clock nanoseconds since the Unix epoch: comparable across threads and processes on one
/// machine, so a consumer can subtract a producer's stamp.
pub fn wall_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// A latency histogram in microseconds, 1 µs to `LATENCY_US_MAX`, 3 significant digits.
#[derive(Debug, Clone)]
pub struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        Latency(Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("valid histogram bounds"))
    }
}

impl Latency {
    /// Records `to_ns - from_ns`; a negative difference (clock step) records as 0 µs, a huge one
    /// is clamped to the histogram's range.
    pub fn record_between(&mut self, from_ns: u64, to_ns: u64) {
        self.record_us(to_ns.saturating_sub(from_ns) / 1000);
    }

    pub fn record_us(&mut self, us: u64) {
        self.0.record(us.clamp(1, LATENCY_US_MAX)).expect("value clamped into range");
    }

    pub fn add(&mut self, other: &Latency) {
        self.0.add(&other.0).expect("histograms share their bounds");
    }

    pub fn len(&self) -> u64 {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn reset(&mut self) {
        self.0.reset();
    }

    pub fn value_at_quantile_us(&self, q: f64) -> u64 {
        self.0.value_at_quantile(q)
    }

    /// The summary a report quotes, or `None` if nothing was recorded.
    pub fn percentiles(&self) -> Option<Percentiles> {
        if self.0.is_empty() {
            return None;
        }
        let h = &self.0;
        Some(Percentiles {
            count: h.len(),
            mean_us: h.mean(),
            p50_us: h.value_at_quantile(0.5),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            p9999_us: h.value_at_quantile(0.9999),
            max_us: h.max(),
            spectrum: SPECTRUM_QUANTILES.iter().map(|&q| (q, h.value_at_quantile(q))).collect(),
        })
    }
}

/// Quantiles in a report's spectrum, for a latency-by-percentile plot.
pub const SPECTRUM_QUANTILES: &[f64] = &[
    0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999, 0.99995, 0.99999, 1.0,
];

/// A latency summary. Values are upper bounds of HDR buckets (3 significant digits).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub p9999_us: u64,
    pub max_us: u64,
    /// (quantile, µs) pairs at `SPECTRUM_QUANTILES`.
    pub spectrum: Vec<(f64, u64)>,
}

/// Counters and histograms one thread accumulates between flushes; also the shared totals.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub published_messages: u64,
    pub published_bytes: u64,
    pub publish_errors: u64,
    pub consumed_messages: u64,
    pub consumed_bytes: u64,
    pub publish: Latency,
    /// From writing a produce request to reading its response, per message: the broker's part
    /// of `publish` (the rest is the producer's batching and queueing).
    pub publish_round_trip: Latency,
    pub end_to_end: Latency,
}

impl Sample {
    pub fn add(&mut self, o: &Sample) {
        self.published_messages += o.published_messages;
        self.published_bytes += o.published_bytes;
        self.publish_errors += o.publish_errors;
        self.consumed_messages += o.consumed_messages;
        self.consumed_bytes += o.consumed_bytes;
        self.publish.add(&o.publish);
        self.publish_round_trip.add(&o.publish_round_trip);
        self.end_to_end.add(&o.end_to_end);
    }

    /// Moves everything into `into` and leaves this sample empty.
    pub fn drain_into(&mut self, into: &mut Sample) {
        into.add(self);
        self.published_messages = 0;
        self.published_bytes = 0;
        self.publish_errors = 0;
        self.consumed_messages = 0;
        self.consumed_bytes = 0;
        self.publish.reset();
        self.publish_round_trip.reset();
        self.end_to_end.reset();
    }
}

/// Hands out intended send times: on a fixed schedule at a target rate, or "now" at maximum
/// rate. Times are wall-clock nanoseconds.
#[derive(Debug, Clone)]
pub struct Pacer {
    start_ns: u64,
    /// Nanoseconds between messages; 0 for maximum rate.
    interval_ns: f64,
    sent: u64,
}

impl Pacer {
    /// `rate` messages per second for this pacer (0: as fast as possible), from `start_ns`.
    pub fn new(start_ns: u64, rate: f64) -> Pacer {
        Pacer {
            start_ns,
            interval_ns: if rate > 0.0 { 1e9 / rate } else { 0.0 },
            sent: 0,
        }
    }

    pub fn is_fixed_rate(&self) -> bool {
        self.interval_ns > 0.0
    }

    /// The intended send time of the next message if it is due at `now_ns`, and moves on; else
    /// `None`. At a fixed rate a late caller gets every missed slot in turn, each with its own
    /// (past) intended time, so the lateness is measured rather than skipped.
    pub fn next_due(&mut self, now_ns: u64) -> Option<u64> {
        if !self.is_fixed_rate() {
            self.sent += 1;
            return Some(now_ns);
        }
        let intended = self.intended_ns(self.sent);
        if intended <= now_ns {
            self.sent += 1;
            Some(intended)
        } else {
            None
        }
    }

    /// When the next message is due (at maximum rate: now, i.e. `start_ns` is meaningless).
    pub fn next_intended_ns(&self) -> u64 {
        self.intended_ns(self.sent)
    }

    /// When the message `k` places after the next one is due (`k = 0`: the next one).
    pub fn intended_ns_after(&self, k: u64) -> u64 {
        self.intended_ns(self.sent + k)
    }

    fn intended_ns(&self, i: u64) -> u64 {
        self.start_ns + (i as f64 * self.interval_ns) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_histogram() {
        let mut h = Latency::default();
        for us in 1..=10_000u64 {
            h.record_us(us);
        }
        let p = h.percentiles().unwrap();
        assert_eq!(p.count, 10_000);
        // HDR with 3 significant digits: within 0.1%.
        let near = |got: u64, want: u64| (got as f64 - want as f64).abs() <= want as f64 * 0.001 + 1.0;
        assert!(near(p.p50_us, 5_000), "{p:?}");
        assert!(near(p.p99_us, 9_900), "{p:?}");
        assert!(near(p.p999_us, 9_990), "{p:?}");
        assert!(near(p.p9999_us, 9_999), "{p:?}");
        assert!(near(p.max_us, 10_000), "{p:?}");
        assert_eq!(p.spectrum.len(), SPECTRUM_QUANTILES.len());
        assert!(p.spectrum.windows(2).all(|w| w[0].1 <= w[1].1), "a spectrum never falls");
        assert!(Latency::default().percentiles().is_none());
    }

    #[test]
    fn out_of_range_latencies_are_clamped_not_lost() {
        let mut h = Latency::default();
        h.record_between(2_000, 1_000); // the clock stepped back
        h.record_us(u64::MAX);
        assert_eq!(h.len(), 2);
        assert!(h.value_at_quantile_us(1.0) >= LATENCY_US_MAX);
    }

    #[test]
    fn samples_add_and_drain() {
        let mut a = Sample {
            published_messages: 3,
            ..Sample::default()
        };
        a.publish.record_us(10);
        let mut total = Sample::default();
        a.drain_into(&mut total);
        a.drain_into(&mut total);
        assert_eq!(total.published_messages, 3);
        assert_eq!(total.publish.len(), 1);
        assert_eq!(a.published_messages, 0);
        assert!(a.publish.is_empty());
    }

    /// The coordinated-omission correction: at 1,000 msg/s, a sender stalled for 100 ms and
    /// acknowledged 1 ms after each actual send must record the stall. Measured from the
    /// actual send, every latency would be 1 ms; from the intended time, p99 is about 100 ms.
    #[test]
    fn a_stall_at_fixed_rate_shows_in_the_latency() {
        let ms = 1_000_000u64;
        let start = 1_000 * ms;
        let mut pacer = Pacer::new(start, 1000.0);
        let mut corrected = Latency::default();
        let mut naive = Latency::default();
        let mut now = start;
        let end = start + 1000 * ms;
        while now < end {
            // Stalled from 400 ms to 500 ms: the sender does not run.
            if (start + 400 * ms..start + 500 * ms).contains(&now) {
                now = start + 500 * ms;
                continue;
            }
            while let Some(intended) = pacer.next_due(now) {
                let acked = now + ms;
                corrected.record_between(intended, acked);
                naive.record_between(now, acked);
            }
            now += 100_000; // the sender wakes every 0.1 ms
        }
        assert_eq!(corrected.len(), naive.len());
        assert!((990..=1001).contains(&corrected.len()), "{}", corrected.len());
        assert_eq!(naive.value_at_quantile_us(0.99), 1000, "the naive figure hides the stall");
        let p99 = corrected.value_at_quantile_us(0.99);
        // The 10 latest of the 1,000 messages were scheduled in the first 10 ms of the stall.
        assert!((88_000..=95_000).contains(&p99), "corrected p99 {p99} µs");
        let max = corrected.value_at_quantile_us(1.0);
        assert!((100_000..=101_500).contains(&max), "corrected max {max} µs");
        // Outside the stall the corrected latency is the 1 ms response plus at most one wake-up.
        assert!(corrected.value_at_quantile_us(0.5) <= 1_100);
    }

    #[test]
    fn at_maximum_rate_the_intended_time_is_now() {
        let mut p = Pacer::new(0, 0.0);
        assert!(!p.is_fixed_rate());
        assert_eq!(p.next_due(42), Some(42));
        assert_eq!(p.next_due(43), Some(43));
    }

    #[test]
    fn a_fixed_rate_pacer_is_not_due_early() {
        let mut p = Pacer::new(1_000, 1000.0);
        assert_eq!(p.next_due(999), None);
        assert_eq!(p.next_due(1_000), Some(1_000));
        assert_eq!(p.next_due(1_001), None);
        assert_eq!(p.next_intended_ns(), 1_001_000);
    }
}
