//! A run second by second: messages confirmed and completions received in each second
//! since the first publish, and the latency percentiles of that second's completions.
//! Memory is bounded: past [`MAX_POINTS`] buckets, neighbours merge and each bucket
//! spans twice as long (2 s, 4 s, ...), so an hour-long run keeps as many as a short one.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::time::Instant;

/// Buckets kept at most (15 minutes at one per second).
pub const MAX_POINTS: usize = 900;

/// Per-bucket counts as they come in.
#[derive(Debug)]
pub(crate) struct Timeline {
    start: Option<Instant>,
    /// Seconds each bucket spans.
    step: u64,
    buckets: Vec<Bucket>,
}

#[derive(Debug, Default)]
struct Bucket {
    published: u64,
    completed: u64,
    /// Microseconds from publish to event, of this bucket's completions; made on the
    /// first one (about 13 KiB each, 2 significant digits).
    latency: Option<Histogram<u32>>,
}

/// One bucket as reported.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    /// Seconds from the first publish to the bucket's start.
    pub second: u64,
    /// Messages the broker confirmed in the bucket.
    pub published: u64,
    /// Completion events received in the bucket.
    pub completed: u64,
    /// Latency percentiles of those completions in milliseconds; `None` without any.
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

impl Timeline {
    pub fn new() -> Self {
        Self {
            start: None,
            step: 1,
            buckets: Vec::new(),
        }
    }

    /// The run starts at its first publish.
    pub fn started(&mut self, at: Instant) {
        self.start.get_or_insert(at);
    }

    pub fn published(&mut self, at: Instant) {
        self.bucket(at).published += 1;
    }

    pub fn completed(&mut self, at: Instant, micros: u64) {
        let bucket = self.bucket(at);
        bucket.completed += 1;
        bucket
            .latency
            .get_or_insert_with(new_histogram)
            .saturating_record(micros.max(1));
    }

    /// The bucket of `at`, made (and older ones merged) as needed.
    fn bucket(&mut self, at: Instant) -> &mut Bucket {
        let start = *self.start.get_or_insert(at);
        let second = at.saturating_duration_since(start).as_secs();
        let mut index = usize::try_from(second / self.step).unwrap_or(usize::MAX);
        while index >= MAX_POINTS {
            self.coarsen();
            index = usize::try_from(second / self.step).unwrap_or(usize::MAX);
        }
        if self.buckets.len() <= index {
            self.buckets.resize_with(index + 1, Bucket::default);
        }
        &mut self.buckets[index]
    }

    /// Merges neighbouring buckets: each now spans twice as long.
    fn coarsen(&mut self) {
        let old = std::mem::take(&mut self.buckets);
        let mut pairs = old.into_iter();
        while let Some(mut first) = pairs.next() {
            if let Some(second) = pairs.next() {
                first.published += second.published;
                first.completed += second.completed;
                first.latency = match (first.latency, second.latency) {
                    (Some(mut a), Some(b)) => {
                        let _ = a.add(&b);
                        Some(a)
                    }
                    (a, b) => a.or(b),
                };
            }
            self.buckets.push(first);
        }
        self.step *= 2;
    }

    /// Seconds each point spans.
    pub fn step(&self) -> u64 {
        self.step
    }

    pub fn points(&self) -> Vec<Point> {
        let ms =
            |h: &Histogram<u32>, q: f64| (h.value_at_quantile(q) as f64 / 100.0).round() / 10.0;
        self.buckets
            .iter()
            .enumerate()
            .map(|(i, b)| Point {
                second: i as u64 * self.step,
                published: b.published,
                completed: b.completed,
                p50_ms: b.latency.as_ref().map(|h| ms(h, 0.50)),
                p95_ms: b.latency.as_ref().map(|h| ms(h, 0.95)),
                p99_ms: b.latency.as_ref().map(|h| ms(h, 0.99)),
            })
            .collect()
    }
}

fn new_histogram() -> Histogram<u32> {
    Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("valid histogram bounds")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn counts_land_in_the_second_they_happened() {
        let t0 = Instant::now();
        let mut timeline = Timeline::new();
        timeline.started(t0);
        timeline.published(t0);
        timeline.published(t0 + Duration::from_millis(1500));
        timeline.completed(t0 + Duration::from_millis(1700), 200_000);
        timeline.completed(t0 + Duration::from_millis(3100), 1_000);
        let points = timeline.points();
        assert_eq!(points.len(), 4);
        assert_eq!(
            points.iter().map(|p| p.published).collect::<Vec<_>>(),
            [1, 1, 0, 0]
        );
        assert_eq!(
            points.iter().map(|p| p.completed).collect::<Vec<_>>(),
            [0, 1, 0, 1]
        );
        assert_eq!(points[0].p50_ms, None);
        // Two significant digits: within 1 %.
        let near = |ms: Option<f64>, want: f64| (ms.unwrap() - want).abs() <= want / 100.0;
        assert!(near(points[1].p50_ms, 200.0), "{:?}", points[1]);
        assert!(near(points[3].p99_ms, 1.0), "{:?}", points[3]);
    }

    #[test]
    fn a_long_run_keeps_a_bounded_number_of_coarser_points() {
        let t0 = Instant::now();
        let mut timeline = Timeline::new();
        timeline.started(t0);
        for second in 0..2000 {
            let at = t0 + Duration::from_secs(second);
            timeline.published(at);
            timeline.completed(at, 5_000);
        }
        let points = timeline.points();
        assert!(points.len() <= MAX_POINTS, "{}", points.len());
        assert_eq!(timeline.step(), 4);
        assert_eq!(points.iter().map(|p| p.published).sum::<u64>(), 2000);
        assert_eq!(points.iter().map(|p| p.completed).sum::<u64>(), 2000);
        assert_eq!(points[1].second, 4);
    }
}
