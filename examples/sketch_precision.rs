//! Issue 21's precision table (BENCHMARKS.md, "Issue 21: sketch
//! precision"): the distinct-count sketch's estimate against the truth at
//! 10, 1k, 10k and 100k distinct ids for p = 8, 10, 12, 14, over 20 fleet
//! keys, beside the series a pod exposes (registers above 0, plus
//! `_sketch_registers`).
//!
//! Then the scrape cost of one rule's sketch at 100k distinct ids: building
//! its two families and rendering them as text, per scrape.
//!
//! `cargo run --release --example sketch_precision`

use geometra_sidecar::metrics::encode::encode_text;
use geometra_sidecar::metrics::sketch::{self, estimate, FleetHash, Sketch};
use geometra_sidecar::metrics::snapshot::Snapshot;
use geometra_sidecar::metrics::{Distinct, IdRef, SketchConfig};
use std::time::Instant;

const KEYS: u8 = 20;

fn main() {
    precision();
    scrape_cost();
}

fn scrape_cost() {
    println!();
    println!("| p | series | text bytes | build + render per scrape |");
    println!("|---|---|---|---|");
    for p in [10u8, 12, 14] {
        let cfg = SketchConfig {
            key: sketch::DEFAULT_KEY,
            precision: p,
        };
        let d = Distinct::new("active_users", "users", 300, 100_000, &cfg);
        let mut bytes_all = Vec::new();
        let batch: Vec<IdRef> = (0..100_000u32)
            .map(|i| {
                let start = bytes_all.len() as u32;
                bytes_all.extend_from_slice(format!("user-{i}").as_bytes());
                IdRef {
                    exact: u64::from(i) + 1,
                    start,
                    end: bytes_all.len() as u32,
                }
            })
            .collect();
        d.insert(&batch, &bytes_all, 1000);
        let rounds = 200u32;
        let t = Instant::now();
        let mut bytes = 0;
        let mut series = 0;
        for _ in 0..rounds {
            let families = Vec::from(sketch::families(&d, 1000));
            series = families.iter().map(|f| f.series.len()).sum();
            let text = encode_text(
                &Snapshot {
                    families,
                    timestamp_ms: 0,
                },
                false,
            );
            bytes = text.len();
        }
        let per = t.elapsed() / rounds;
        println!("| {p} | {series} | {bytes} | {per:?} |");
    }
}

fn precision() {
    println!("| p | m | 1.04/sqrt(m) | n | mean abs error | RMS error | max abs error | series per pod |");
    println!("|---|---|---|---|---|---|---|---|");
    for p in [8u8, 10, 12, 14] {
        let m = 1usize << p;
        for n in [10u32, 1_000, 10_000, 100_000] {
            let (mut sum, mut sq, mut worst, mut series) = (0.0, 0.0, 0.0f64, 0usize);
            for k in 0..KEYS {
                let key = [k.wrapping_mul(37).wrapping_add(1); 16];
                let h = FleetHash::new(&key);
                let mut s = Sketch::new(p, 300);
                for i in 0..n {
                    s.insert(h.hash(format!("user-{i}").as_bytes()), 0);
                }
                let regs = s.registers(0);
                let e = (estimate(&regs) - f64::from(n)) / f64::from(n);
                sum += e.abs();
                sq += e * e;
                worst = worst.max(e.abs());
                series += regs.iter().filter(|&&r| r > 0).count() + 1;
            }
            let k = f64::from(KEYS);
            println!(
                "| {p} | {m} | {:.2} % | {n} | {:.2} % | {:.2} % | {:.2} % | {} |",
                104.0 / (m as f64).sqrt(),
                100.0 * sum / k,
                100.0 * (sq / k).sqrt(),
                100.0 * worst,
                series / usize::from(KEYS)
            );
        }
    }
}
