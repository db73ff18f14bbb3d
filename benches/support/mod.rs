//! Shared bench plumbing: which clock criterion uses.
//!
//! The dev machine has 2 cores shared with builds and other sessions, so
//! wall-clock numbers swing with the load.  `IMAPGATE_BENCH_CLOCK=thread-cpu`
//! measures this thread's CPU time instead (`CLOCK_THREAD_CPUTIME_ID`),
//! which leaves out the time the benchmark spends descheduled; results are
//! printed in the same units.  The default is criterion's wall clock.

use std::time::Duration;

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::Criterion;

/// This thread's CPU time, as a criterion measurement.
pub struct ThreadCpuTime;

static WALL: WallTime = WallTime;

impl Measurement for ThreadCpuTime {
    type Intermediate = cpu_time::ThreadTime;
    type Value = Duration;

    fn start(&self) -> Self::Intermediate {
        cpu_time::ThreadTime::now()
    }

    fn end(&self, start: Self::Intermediate) -> Self::Value {
        start.elapsed()
    }

    fn add(&self, a: &Self::Value, b: &Self::Value) -> Self::Value {
        *a + *b
    }

    fn zero(&self) -> Self::Value {
        Duration::ZERO
    }

    fn to_f64(&self, value: &Self::Value) -> f64 {
        value.as_nanos() as f64
    }

    fn formatter(&self) -> &dyn ValueFormatter {
        // Same unit (nanoseconds of a Duration) as the wall clock.
        WALL.formatter()
    }
}

/// The benches' `main`: run the bench function (passed twice, once per
/// clock type) with the clock `IMAPGATE_BENCH_CLOCK` selects.
pub fn main_with(wall: fn(&mut Criterion<WallTime>), cpu: fn(&mut Criterion<ThreadCpuTime>)) {
    if std::env::var("IMAPGATE_BENCH_CLOCK").as_deref() == Ok("thread-cpu") {
        let mut c = Criterion::default()
            .with_measurement(ThreadCpuTime)
            .configure_from_args();
        cpu(&mut c);
        c.final_summary();
    } else {
        let mut c = Criterion::default().configure_from_args();
        wall(&mut c);
        c.final_summary();
    }
}
