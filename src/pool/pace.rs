//! [`Pace`]: how quickly a worker answers, and what its driver makes of it.

use std::time::Duration;

use crate::pacing::Average;
use crate::worker::progress::DEPTH_MAX;

/// How quickly this worker answers, and what the driver makes of it.
///
/// `service` is a moving average of the time from one reply to the next while tasks
/// are in flight (for one task at a time: from sending it to its reply). From it:
/// - the pipeline depth: enough tasks to keep the worker busy for about
///   [`Pace::AHEAD`], at most `DEPTH_MAX`, one until anything is known. (Measured
///   with `cargo bench --bench compare -- --only W2` on the 2-vCPU VM of
///   BENCHMARKS.md: 16 deep and 200 µs ahead gave 260-281k submits/s, 64 and
///   400 µs 311-356k.) Tasks sent ahead of one that runs longer than that are
///   handed to an idle driver (see `driver`).
/// - the spin: while a reply is awaited, poll for up to twice the typical reply time
///   before sleeping on the reactor, if that is under [`Pace::SPIN_MAX`]. Only with
///   a task in flight: an idle pool never spins.
///
/// Likewise between tasks: `gap` is a moving average of the time from the last reply
/// to the next job; while it is under [`Pace::SPIN_MAX`] (a caller awaiting one task
/// after another), the idle driver polls the queue for up to twice that before
/// parking, so the next submit does not have to wake it.
#[derive(Debug, Default)]
pub(crate) struct Pace {
    service: Average,
    gap: Average,
}

impl Pace {
    pub(crate) const AHEAD: Duration = Duration::from_micros(400);
    const SPIN_MAX: Duration = Duration::from_micros(50);

    pub(crate) fn replied(&mut self, took: Duration) {
        self.service.record(took);
    }

    pub(crate) fn idled(&mut self, gap: Duration) {
        self.gap.record(gap);
    }

    pub(crate) fn idle_spin(&self) -> Duration {
        self.gap.spin(Self::SPIN_MAX)
    }

    pub(crate) fn depth(&self) -> usize {
        match self.service.get() {
            None => 1,
            Some(s) => {
                let per = s.as_nanos().max(1);
                ((Self::AHEAD.as_nanos() / per) as usize).clamp(1, DEPTH_MAX)
            }
        }
    }

    pub(crate) fn spin(&self) -> Duration {
        self.service.spin(Self::SPIN_MAX)
    }
}
