//! Phase timings for people measuring a build: off unless the caller calls [`enable`] (the
//! CLI does when `PALLET_TIMINGS` is set); each [`mark`] then prints the time since `enable`
//! on stderr. Nothing here changes what a build writes.

use std::sync::OnceLock;
use std::time::Instant;

static START: OnceLock<Instant> = OnceLock::new();

/// Start the clock; later marks print.
pub fn enable() {
    START.get_or_init(Instant::now);
}

/// Print `label` with the milliseconds since [`enable`], if it was called, and the CPU time
/// the process's live threads have used (Linux's per-thread schedstat).
pub fn mark(label: &str) {
    if let Some(t) = START.get() {
        eprintln!(
            "[{:8.1} ms, cpu {:6.1} ms] {label}",
            t.elapsed().as_secs_f64() * 1e3,
            cpu_ns() as f64 / 1e6
        );
    }
}

fn cpu_ns() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}
