//! The exporters' own counters, in the OpenTelemetry Collector's names:
//! items sent, failed and refused by the queue, and the queue's size.

use crate::base::{SignalKind, SIGNAL_ITEM_NAMES};
use crate::telemetry::SelfMetrics;
use opentelemetry::KeyValue;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// An exporter's counters, in the OpenTelemetry Collector's names.
pub struct ExporterStats {
    /// e.g. `otlp/logs`
    pub name: String,
    pub signal: SignalKind,
    pub sent: AtomicU64,
    pub send_failed: AtomicU64,
    pub enqueue_failed: AtomicU64,
    pub queue_size: AtomicU64,
    pub queue_capacity: AtomicU64,
}

impl ExporterStats {
    pub fn new(name: &str, signal: SignalKind, capacity: u64) -> Self {
        ExporterStats {
            name: name.into(),
            signal,
            sent: AtomicU64::new(0),
            send_failed: AtomicU64::new(0),
            enqueue_failed: AtomicU64::new(0),
            queue_size: AtomicU64::new(0),
            queue_capacity: AtomicU64::new(capacity),
        }
    }
}

fn load(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

impl ExporterStats {
    /// The exporters' self-metrics in the Collector's names, for the
    /// signals that have an exporter (call after they are built).
    pub fn declare(t: &SelfMetrics, exporters: &[Arc<ExporterStats>]) {
        if exporters.is_empty() {
            return;
        }
        type Field = fn(&ExporterStats) -> &AtomicU64;
        let counters: [(&str, &str, Field); 3] = [
            ("sent", "successfully sent to destination", |x| &x.sent),
            (
                "send_failed",
                "in failed attempts to send to destination",
                |x| &x.send_failed,
            ),
            (
                "enqueue_failed",
                "failed to be added to the sending queue",
                |x| &x.enqueue_failed,
            ),
        ];
        for (what, help, field) in counters {
            for (item, i) in SIGNAL_ITEM_NAMES.iter().zip(0..) {
                let of: Vec<Arc<ExporterStats>> = exporters
                    .iter()
                    .filter(|x| x.signal as usize == i)
                    .cloned()
                    .collect();
                if of.is_empty() {
                    continue;
                }
                let name = format!("otelcol_exporter_{what}_{item}_total");
                let help = format!("Number of {item} {help}.");
                t.counter(&name, &help, "", move |o| {
                    for x in &of {
                        o.observe(load(field(x)), &[KeyValue::new("exporter", x.name.clone())]);
                    }
                });
            }
        }
        let gauges: [(&str, &str, Field); 2] = [
            (
                "otelcol_exporter_queue_size",
                "Current size of the sending queue (items; bytes on disk with an on-disk queue).",
                |x| &x.queue_size,
            ),
            (
                "otelcol_exporter_queue_capacity",
                "Capacity of the sending queue (items; bytes with an on-disk queue); a config reload may change it.",
                |x| &x.queue_capacity,
            ),
        ];
        for (name, help, field) in gauges {
            let all = exporters.to_vec();
            t.gauge(name, help, "", move |o| {
                for x in &all {
                    let v = load(field(x)) as f64;
                    o.observe(v, &[KeyValue::new("exporter", x.name.clone())]);
                }
            });
        }
    }
}
