//! [`Average`]: how long something lately took, and how long to poll for it before
//! sleeping.
//!
//! Waking a sleeping thread or process costs tens of microseconds on a busy or
//! virtualised machine; polling for something that comes within microseconds costs
//! less. The pool's drivers, its workers and pipe receivers all make the same bet: poll
//! for up to twice the recent average wait while that average is short, and not at all
//! otherwise, so that nothing idle ever spins.

use std::time::Duration;

/// A moving average of durations (each new one weighs a quarter), empty until the
/// first.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Average(Option<Duration>);

impl Average {
    pub(crate) const fn new() -> Average {
        Average(None)
    }

    /// Adds one duration.
    pub(crate) fn record(&mut self, took: Duration) {
        self.0 = Some(match self.0 {
            None => took,
            Some(avg) => (avg * 3 + took) / 4,
        });
    }

    /// The average, once there is one.
    pub(crate) fn get(self) -> Option<Duration> {
        self.0
    }

    /// How long to poll before sleeping: twice the average, at most `max`, while the
    /// average is under `max`; zero otherwise (and before anything was recorded).
    pub(crate) fn spin(self, max: Duration) -> Duration {
        match self.0 {
            Some(avg) if avg < max => (avg * 2).min(max),
            _ => Duration::ZERO,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spins_only_while_the_average_is_short() {
        let us = Duration::from_micros;
        let mut a = Average::new();
        assert_eq!(a.spin(us(50)), Duration::ZERO);
        a.record(us(10));
        assert_eq!(a.get(), Some(us(10)));
        assert_eq!(a.spin(us(50)), us(20));
        a.record(us(90));
        assert_eq!(a.get(), Some(us(30)));
        assert_eq!(a.spin(us(50)), us(50));
        a.record(us(1000));
        assert_eq!(a.spin(us(50)), Duration::ZERO);
    }
}
