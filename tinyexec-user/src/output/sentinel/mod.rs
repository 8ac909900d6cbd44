//! Microsoft Sentinel through the Logs Ingestion API: records are batched (by
//! count, bytes and delay, within the API's 1 MB per call), spooled to disk, and
//! sent (POST) in order by a sender thread that retries with backoff while the service
//! is unreachable and splits a batch the service finds too large. Nothing is lost
//! to an outage or a restart short of the spool's size bound; that loss, and every
//! record the service refuses for good, is counted and logged.
//!
//! The batching runs on the output's worker (a record counts as written once
//! its batch is on disk); the sender is a thread of its own, so a service that
//! hangs delays neither the spool nor anything else.

mod client;
mod credential;
mod settings;
mod spool;

use std::{
    fs,
    path::Path,
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use serde_json::Value;

use client::{Client, Outcome};
use settings::Settings;

use spool::Spool;

use super::{
    item::Item,
    worker::{Failed, Sink, Written},
};

const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_mins(1);

/// How long the sender's last pass may take at exit; the spool keeps the rest.
const SENDER_GRACE: Duration = Duration::from_secs(2);

/// Wakes the sender when a batch is spooled or the sensor stops.
#[derive(Default)]
struct Signal {
    state: Mutex<(u64, bool)>,
    cv: Condvar,
}

impl Signal {
    fn notify(&self, stop: bool) {
        let mut g = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        g.0 += 1;
        g.1 |= stop;
        self.cv.notify_all();
    }

    /// Waits up to `d` for news; true when stopping.
    fn wait(&self, d: Duration, seen: &mut u64) -> bool {
        let g = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (g, _) = self
            .cv
            .wait_timeout_while(g, d, |(n, stop)| *n == *seen && !*stop)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *seen = g.0;
        g.1
    }
}

/// What became of the records after the spool, for the heartbeat and the counters line.
#[derive(Default)]
pub struct Stats {
    delivered: AtomicU64,
    /// Refused for good by the service, or over the API's limit on their own.
    rejected: AtomicU64,
    /// Dropped by the spool's size bound.
    dropped: AtomicU64,
    /// Batches split after an HTTP 413.
    splits: AtomicU64,
}

/// [`Stats`] at one moment.
#[derive(Clone, Copy, Debug, Default)]
pub struct Delivery {
    pub delivered: u64,
    pub rejected: u64,
    pub spool_dropped: u64,
    pub splits: u64,
}

impl Stats {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn delivery(&self) -> Delivery {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Delivery {
            delivered: get(&self.delivered),
            rejected: get(&self.rejected),
            spool_dropped: get(&self.dropped),
            splits: get(&self.splits),
        }
    }
}

/// The batcher (the output's [`Sink`]) and its sender thread.
pub struct Sentinel {
    settings: Arc<Settings>,
    spool: Spool,
    signal: Arc<Signal>,
    stats: Arc<Stats>,
    sender: Option<thread::JoinHandle<()>>,
    batch: Vec<String>,
    bytes: usize,
    started: Instant,
}

/// A record as the DCR stream expects it: `TimeGenerated` instead of `@timestamp`.
fn payload(item: &Item) -> Result<String> {
    let json = std::str::from_utf8(item.json())?;
    // `@timestamp` is the record's first field: renaming it in the text spares
    // parsing and encoding the record again.
    if let Some(rest) = json.strip_prefix(r#"{"@timestamp":"#) {
        return Ok(format!(r#"{{"TimeGenerated":{rest}"#));
    }
    let mut v: Value = serde_json::from_str(json)?;
    if let Some(obj) = v.as_object_mut() {
        let ts = obj.remove("@timestamp").unwrap_or(Value::Null);
        obj.insert("TimeGenerated".into(), ts);
    }
    Ok(serde_json::to_string(&v)?)
}

impl Sentinel {
    pub fn open(settings_file: &Path) -> Result<Self> {
        let settings = Arc::new(Settings::load(settings_file)?);
        let spool = Spool::open(&settings.spool_dir, settings.spool_max_bytes)?;
        let client = Client::new(Arc::clone(&settings))?;
        let signal = Arc::new(Signal::default());
        let stats = Arc::new(Stats::default());
        let sender = {
            let (settings, signal, stats) = (
                Arc::clone(&settings),
                Arc::clone(&signal),
                Arc::clone(&stats),
            );
            thread::Builder::new()
                .name("sentinel-send".into())
                .spawn(move || send_loop(client, &settings, &signal, &stats))?
        };
        Ok(Self {
            settings,
            spool,
            signal,
            stats,
            sender: Some(sender),
            batch: Vec::new(),
            bytes: 0,
            started: Instant::now(),
        })
    }

    pub fn stats(&self) -> Arc<Stats> {
        Arc::clone(&self.stats)
    }

    /// Spools the batch; returns how many records it held (all settled: written
    /// when spooled, failed when the spool could not take them).
    fn flush(&mut self) -> Result<u64, Failed> {
        if self.batch.is_empty() {
            return Ok(0);
        }
        let n = self.batch.len() as u64;
        let records: Vec<&str> = self.batch.iter().map(String::as_str).collect();
        let pushed = self.spool.push(&records, settings::API_MAX_BYTES);
        self.batch.clear();
        self.bytes = 0;
        self.signal.notify(false);
        match pushed {
            Ok(0) => Ok(n),
            Ok(dropped) => {
                Stats::add(&self.stats.dropped, dropped);
                log::error!(
                    "sentinel: spool over {} bytes: dropped the oldest {dropped} records",
                    self.settings.spool_max_bytes
                );
                Ok(n)
            }
            Err(e) => Err(Failed {
                error: e.context(format!("could not spool {n} records")),
                disconnect: false,
                records: n,
                fatal: false,
            }),
        }
    }
}

/// The body's size if `next` joins `batch`: `[`, the records, commas, `]`.
fn body_len(batch_bytes: usize, batch_len: usize, next: usize) -> usize {
    2 + batch_bytes + next + batch_len
}

impl Sink for Sentinel {
    fn write(&mut self, item: &Item) -> Result<Written, Failed> {
        let s = Arc::clone(&self.settings);
        let r = payload(item)
            .context("encoding for Sentinel")
            .map_err(|e| Failed::record(e, false))?;
        if body_len(0, 0, r.len()) > s.batch_max_bytes {
            // Alone over the limit: no call can carry it. Kept, counted, said.
            Stats::add(&self.stats.rejected, 1);
            let kept = self.spool.set_aside(&[r.as_str()]);
            log::error!(
                "sentinel: rejected 1 record of {} bytes, over the {} bytes a call may carry; kept in {}",
                r.len(),
                s.batch_max_bytes,
                kept.map_or_else(|e| format!("nowhere ({e:#})"), |p| p.display().to_string())
            );
            return Ok(Written(1));
        }
        // The records spooled by a flush here were settled as written by it.
        let mut settled = 0;
        if !self.batch.is_empty()
            && body_len(self.bytes, self.batch.len(), r.len()) > s.batch_max_bytes
        {
            // Failing, the batch fails and this record with it (it has nowhere to go).
            settled += self.flush().map_err(|mut f| {
                f.records += 1;
                f
            })?;
        }
        if self.batch.is_empty() {
            self.started = Instant::now();
        }
        self.bytes += r.len();
        self.batch.push(r);
        if self.batch.len() >= s.batch_max_records {
            settled += self.flush()?;
        }
        Ok(Written(settled))
    }

    /// Spools the batch once it is `batch_max_delay_ms` old.
    fn idle(&mut self) -> Result<u64, Failed> {
        if self.batch.is_empty() || self.wait().is_some_and(|w| !w.is_zero()) {
            return Ok(0);
        }
        self.flush()
    }

    fn wait(&self) -> Option<Duration> {
        (!self.batch.is_empty()).then(|| {
            Duration::from_millis(self.settings.batch_max_delay_ms)
                .saturating_sub(self.started.elapsed())
        })
    }

    /// Spools what is batched, gives the sender one last pass of at most
    /// [`SENDER_GRACE`] (a hanging service keeps it no longer: the spool keeps
    /// the batches for the next start).
    fn finish(&mut self) -> Result<u64, Failed> {
        let spooled = self.flush();
        self.signal.notify(true);
        if let Some(t) = self.sender.take() {
            let deadline = Instant::now() + SENDER_GRACE;
            while !t.is_finished() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(10));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
        spooled
    }
}

/// Sets a batch aside for good: counted, logged with the reason and where it is kept.
fn reject(batch: &spool::Batch, why: &str, stats: &Stats) {
    Stats::add(&stats.rejected, batch.records);
    let kept = spool::reject(batch);
    log::error!(
        "sentinel: the service rejected {} records ({why}); kept in {}",
        batch.records,
        kept.map_or_else(|e| format!("nowhere ({e:#})"), |p| p.display().to_string())
    );
}

fn send_loop(mut client: Client, s: &Settings, signal: &Signal, stats: &Stats) {
    let mut seen = 0;
    let mut backoff = BACKOFF_MIN;
    let mut stopping = false;
    loop {
        let mut retry_in = None;
        let mut rescan = true;
        while rescan {
            rescan = false;
            for batch in spool::list(&s.spool_dir) {
                let Ok(body) = fs::read(&batch.path) else {
                    continue; // dropped by the size bound meanwhile
                };
                match client.post(&body) {
                    Outcome::Delivered => {
                        let _ = fs::remove_file(&batch.path);
                        Stats::add(&stats.delivered, batch.records);
                        backoff = BACKOFF_MIN;
                    }
                    Outcome::Retry(after, why) => {
                        log::warn!(
                            "sentinel: delivery failed, retrying in {:?}: {why}",
                            after.unwrap_or(backoff)
                        );
                        retry_in = Some(after.unwrap_or(backoff));
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                        break;
                    }
                    // Too large: halves in its place, then from the start, so order holds.
                    Outcome::TooLarge(why) if batch.records > 1 => {
                        match spool::split(&batch) {
                            Ok(()) => Stats::add(&stats.splits, 1),
                            Err(e) => reject(&batch, &format!("{why}; {e:#}"), stats),
                        }
                        rescan = true;
                        break;
                    }
                    Outcome::TooLarge(why) | Outcome::Rejected(why) => reject(&batch, &why, stats),
                }
            }
        }
        if stopping {
            return;
        }
        // In backoff, only a stop ends the wait early; otherwise any new batch does.
        let wait = retry_in.unwrap_or(Duration::from_secs(5));
        let deadline = Instant::now() + wait;
        loop {
            stopping = signal.wait(
                deadline.saturating_duration_since(Instant::now()),
                &mut seen,
            );
            if stopping || retry_in.is_none() || Instant::now() >= deadline {
                break;
            }
        }
        if stopping && retry_in.is_some() {
            return; // the spool keeps the rest for the next start
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_payload_renames_the_timestamp() {
        let rec = crate::record::builder::heartbeat_record(
            crate::record::heartbeat::Snapshot {
                interval_secs: 60,
                last: false,
                execs_seen: 1,
                kernel_lost: 0,
                counters: crate::record::heartbeat::Counters::default(),
                outputs: crate::record::heartbeat::Outputs::default(),
                prevent: None,
            },
            "2026-01-01T00:00:00Z".into(),
            &crate::record::Host {
                hostname: "h".into(),
                boot_id: "b".into(),
            },
            &crate::record::Agent {
                name: "tinyexec",
                version: "0",
                ephemeral_id: "e".into(),
            },
        );
        let item = super::Item::new(rec);
        let p: serde_json::Value = serde_json::from_str(&super::payload(&item).unwrap()).unwrap();
        assert_eq!(p["TimeGenerated"], "2026-01-01T00:00:00Z");
        assert!(p.get("@timestamp").is_none());
        assert_eq!(p["heartbeat"]["execs_seen"], 1);
    }
}
