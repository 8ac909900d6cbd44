//! Microsoft Sentinel through the Logs Ingestion API: records are batched (by
//! count, bytes and delay, within the API's 1 MB per call), spooled to disk, and
//! POSTed in order by a sender thread that retries with backoff while the service
//! is unreachable and splits a batch the service finds too large. Nothing is lost
//! to an outage or a restart short of the spool's size bound; that loss, and every
//! record the service refuses for good, is counted and logged.

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
        mpsc::{self, RecvTimeoutError},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use serde_json::Value;

use client::{Client, Outcome};
use settings::Settings;

use spool::Spool;

use crate::record::Record;

const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

enum Msg {
    Record(String),
    Shutdown,
}

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

/// What became of the records, for the periodic counters line.
#[derive(Default)]
struct Stats {
    delivered: AtomicU64,
    /// Refused for good by the service, or over the API's limit on their own.
    rejected: AtomicU64,
    /// Dropped by the spool's size bound.
    dropped: AtomicU64,
    /// Batches split after an HTTP 413.
    splits: AtomicU64,
}

impl Stats {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

pub struct Sentinel {
    tx: mpsc::Sender<Msg>,
    threads: Vec<thread::JoinHandle<()>>,
    stats: Arc<Stats>,
}

/// A record as the DCR stream expects it: `TimeGenerated` instead of `@timestamp`.
fn payload(rec: &Record) -> Result<String> {
    let mut v = serde_json::to_value(rec)?;
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
        let (tx, rx) = mpsc::channel();
        let batcher = {
            let (settings, signal, stats) = (
                Arc::clone(&settings),
                Arc::clone(&signal),
                Arc::clone(&stats),
            );
            thread::Builder::new()
                .name("sentinel-spool".into())
                .spawn(move || batch_loop(&rx, spool, &settings, &signal, &stats))?
        };
        let sender = {
            let stats = Arc::clone(&stats);
            thread::Builder::new()
                .name("sentinel-send".into())
                .spawn(move || send_loop(client, &settings, &signal, &stats))?
        };
        Ok(Self {
            tx,
            threads: vec![batcher, sender],
            stats,
        })
    }

    /// `delivered N, rejected N, dropped by the spool bound N, batches split N`.
    pub fn counters_line(&self) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "delivered {}, rejected {}, dropped by the spool bound {}, batches split {}",
            get(&self.stats.delivered),
            get(&self.stats.rejected),
            get(&self.stats.dropped),
            get(&self.stats.splits)
        )
    }

    pub fn push(&self, rec: &Record) -> Result<()> {
        let p = payload(rec).context("encoding for Sentinel")?;
        self.tx
            .send(Msg::Record(p))
            .map_err(|_| anyhow::anyhow!("the Sentinel spooler stopped"))
    }
}

impl Drop for Sentinel {
    /// Spools what is batched, gives the sender one last pass, and waits for both.
    fn drop(&mut self) {
        let _ = self.tx.send(Msg::Shutdown);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The body's size if `next` joins `batch`: `[`, the records, commas, `]`.
fn body_len(batch_bytes: usize, batch_len: usize, next: usize) -> usize {
    2 + batch_bytes + next + batch_len
}

fn batch_loop(
    rx: &mpsc::Receiver<Msg>,
    mut spool: Spool,
    s: &Settings,
    signal: &Signal,
    stats: &Stats,
) {
    let delay = Duration::from_millis(s.batch_max_delay_ms);
    let mut batch: Vec<String> = Vec::new();
    let mut bytes = 0;
    let mut started = Instant::now();
    let flush = |spool: &mut Spool, batch: &mut Vec<String>, bytes: &mut usize| {
        if batch.is_empty() {
            return;
        }
        let records: Vec<&str> = batch.iter().map(String::as_str).collect();
        match spool.push(&records, settings::API_MAX_BYTES) {
            Ok(0) => {}
            Ok(dropped) => {
                Stats::add(&stats.dropped, dropped);
                eprintln!(
                    "tinyexec-sensor: sentinel: spool over {} bytes: dropped the oldest {dropped} records",
                    s.spool_max_bytes
                );
            }
            Err(e) => eprintln!(
                "tinyexec-sensor: sentinel: could not spool {} records: {e:#}",
                batch.len()
            ),
        }
        batch.clear();
        *bytes = 0;
        signal.notify(false);
    };
    loop {
        let wait = if batch.is_empty() {
            Duration::from_secs(3600)
        } else {
            delay.saturating_sub(started.elapsed())
        };
        match rx.recv_timeout(wait) {
            Ok(Msg::Record(r)) => {
                if body_len(0, 0, r.len()) > s.batch_max_bytes {
                    // Alone over the limit: no call can carry it. Kept, counted, said.
                    Stats::add(&stats.rejected, 1);
                    let kept = spool.set_aside(&[r.as_str()]);
                    eprintln!(
                        "tinyexec-sensor: sentinel: rejected 1 record of {} bytes, over the {} bytes a call may carry; kept in {}",
                        r.len(),
                        s.batch_max_bytes,
                        kept.map_or_else(
                            |e| format!("nowhere ({e:#})"),
                            |p| p.display().to_string()
                        )
                    );
                    continue;
                }
                if !batch.is_empty() && body_len(bytes, batch.len(), r.len()) > s.batch_max_bytes {
                    flush(&mut spool, &mut batch, &mut bytes);
                }
                if batch.is_empty() {
                    started = Instant::now();
                }
                bytes += r.len();
                batch.push(r);
                if batch.len() >= s.batch_max_records {
                    flush(&mut spool, &mut batch, &mut bytes);
                }
            }
            Err(RecvTimeoutError::Timeout) => flush(&mut spool, &mut batch, &mut bytes),
            Ok(Msg::Shutdown) | Err(RecvTimeoutError::Disconnected) => {
                flush(&mut spool, &mut batch, &mut bytes);
                signal.notify(true);
                return;
            }
        }
    }
}

/// Sets a batch aside for good: counted, logged with the reason and where it is kept.
fn reject(batch: &spool::Batch, why: &str, stats: &Stats) {
    Stats::add(&stats.rejected, batch.records);
    let kept = spool::reject(batch);
    eprintln!(
        "tinyexec-sensor: sentinel: the service rejected {} records ({why}); kept in {}",
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
                        eprintln!(
                            "tinyexec-sensor: sentinel: delivery failed, retrying in {:?}: {why}",
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
