//! The build and process self-metrics (`geometra_sidecar_build_info`,
//! `process_*` as Prometheus' client libraries name them).

use super::SelfMetrics;

/// CPU seconds (user + system) and resident bytes, from /proc/self/stat.
fn proc_stats() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = stat.rsplit(')').next()?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    let rss_pages: f64 = f.get(21)?.parse().ok()?;
    Some((ticks / 100.0, rss_pages * 4096.0))
}

/// Declares the build and process metrics; `started_s` is the start time.
pub fn declare(t: &SelfMetrics, started_s: u64) {
    t.gauge(
        "geometra_sidecar_build_info",
        "Build of the sidecar.",
        "",
        |o| o.observe(1.0, &super::kv([("version", env!("CARGO_PKG_VERSION"))])),
    );
    t.counter_f64(
        "process_cpu_seconds_total",
        "Total user and system CPU time spent in seconds.",
        "s",
        |o| {
            if let Some((cpu, _)) = proc_stats() {
                o.observe(cpu, &[]);
            }
        },
    );
    t.gauge(
        "process_resident_memory_bytes",
        "Resident memory size in bytes.",
        "By",
        |o| {
            if let Some((_, rss)) = proc_stats() {
                o.observe(rss, &[]);
            }
        },
    );
    t.gauge(
        "process_start_time_seconds",
        "Start time of the process since unix epoch in seconds.",
        "s",
        move |o| o.observe(started_s as f64, &[]),
    );
}
