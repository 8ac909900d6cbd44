//! The static (musl) build against the glibc one: the sensor's CPU per
//! `--all-execs` record, the two binaries' storms alternating in one run so
//! that the machine's drift falls on both alike. The static build is what
//! ships; its allocator and `memcpy` once made it spend 2.4–2.9 times the
//! glibc build's CPU per record.

use std::path::Path;

use anyhow::Result;
use serde_json::{Value, json};

use super::{
    measured::Mode,
    report::{Spread, spread},
    sensor::{self, SensorCmd},
    storm::Storm,
};

/// The static build's CPU per record over the glibc build's, at most.
pub const TARGET_RATIO: f64 = 1.25;
/// Processes exec'ing at once in each storm.
const WORKERS: usize = 2;

pub struct Run {
    pub execs: usize,
    /// CPU ms per 1000 records (the process's CPU-time clock), per storm.
    pub glibc: Vec<f64>,
    pub musl: Vec<f64>,
}

impl Run {
    fn medians(&self) -> Option<(Spread, Spread)> {
        spread(&self.glibc).zip(spread(&self.musl))
    }

    /// The static build's median over the glibc build's.
    pub fn ratio(&self) -> Option<f64> {
        self.medians().map(|(g, m)| m.median / g.median)
    }

    pub fn summary(&self) -> String {
        let Some((g, m)) = self.medians() else {
            return "Static against glibc build: not measured".into();
        };
        let ratio = m.median / g.median;
        let verdict = if ratio <= TARGET_RATIO {
            "ok"
        } else {
            "MISSED"
        };
        format!(
            "Static against glibc build, --all-execs, {} storms of {} execs each ({WORKERS} \
             workers), alternating: sensor CPU per 1000 records {:.1} ms ({:.1}-{:.1}) static, \
             {:.1} ms ({:.1}-{:.1}) glibc; ratio {ratio:.2} (<= {TARGET_RATIO}  {verdict})",
            self.musl.len(),
            self.execs,
            m.median,
            m.min,
            m.max,
            g.median,
            g.min,
            g.max,
        )
    }

    pub fn json(&self) -> Value {
        json!({
            "execs": self.execs,
            "workers": WORKERS,
            "glibc_cpu_ms_per_1000": self.glibc,
            "static_cpu_ms_per_1000": self.musl,
            "ratio": self.ratio(),
            "target_ratio": TARGET_RATIO,
        })
    }
}

/// `reps` storms of each build, alternating.
pub fn measure(
    glibc: &SensorCmd,
    musl: &SensorCmd,
    storm: &Storm,
    reps: usize,
    out_dir: &Path,
) -> Result<Run> {
    let mut run = Run {
        execs: storm.n,
        glibc: Vec::new(),
        musl: Vec::new(),
    };
    for _ in 0..reps {
        for (cmd, into) in [(glibc, &mut run.glibc), (musl, &mut run.musl)] {
            let m = sensor::storm(cmd, Mode::AllExecs, storm, WORKERS, out_dir)?;
            into.push(m.cpu_ns as f64 / 1e6 / m.execs as f64 * 1000.0);
        }
    }
    Ok(run)
}
