//! Microsoft Sentinel through the Logs Ingestion API: records are batched,
//! spooled to disk, and POSTed in order by a sender thread that retries with
//! backoff while the service is unreachable. Nothing is lost to an outage or a
//! restart short of the spool's size bound, and that loss is counted.

mod client;
mod credential;
mod settings;
mod spool;

use std::{
    fs,
    path::Path,
    sync::{
        Arc, Condvar, Mutex,
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

pub struct Sentinel {
    tx: mpsc::Sender<Msg>,
    threads: Vec<thread::JoinHandle<()>>,
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
        let (tx, rx) = mpsc::channel();
        let batcher = {
            let (settings, signal) = (Arc::clone(&settings), Arc::clone(&signal));
            thread::Builder::new()
                .name("sentinel-spool".into())
                .spawn(move || batch_loop(&rx, spool, &settings, &signal))?
        };
        let sender = thread::Builder::new()
            .name("sentinel-send".into())
            .spawn(move || send_loop(client, &settings, &signal))?;
        Ok(Self {
            tx,
            threads: vec![batcher, sender],
        })
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

fn batch_loop(rx: &mpsc::Receiver<Msg>, mut spool: Spool, s: &Settings, signal: &Signal) {
    let delay = Duration::from_millis(s.batch_max_delay_ms);
    let mut batch: Vec<String> = Vec::new();
    let mut started = Instant::now();
    let mut flush = |batch: &mut Vec<String>| {
        if batch.is_empty() {
            return;
        }
        match spool.push(batch) {
            Ok(0) => {}
            Ok(dropped) => eprintln!(
                "tinyexec-sensor: sentinel: spool over {} bytes: dropped the oldest {dropped} records",
                s.spool_max_bytes
            ),
            Err(e) => eprintln!(
                "tinyexec-sensor: sentinel: could not spool {} records: {e:#}",
                batch.len()
            ),
        }
        batch.clear();
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
                if batch.is_empty() {
                    started = Instant::now();
                }
                batch.push(r);
                if batch.len() >= s.batch_max_records {
                    flush(&mut batch);
                }
            }
            Err(RecvTimeoutError::Timeout) => flush(&mut batch),
            Ok(Msg::Shutdown) | Err(RecvTimeoutError::Disconnected) => {
                flush(&mut batch);
                signal.notify(true);
                return;
            }
        }
    }
}

fn send_loop(mut client: Client, s: &Settings, signal: &Signal) {
    let mut seen = 0;
    let mut backoff = BACKOFF_MIN;
    let mut stopping = false;
    loop {
        let mut retry_in = None;
        for batch in spool::list(&s.spool_dir) {
            let Ok(body) = fs::read(&batch.path) else {
                continue; // dropped by the size bound meanwhile
            };
            match client.post(&body) {
                Outcome::Delivered => {
                    let _ = fs::remove_file(&batch.path);
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
                Outcome::Rejected(why) => {
                    let rejected = s.spool_dir.join("rejected");
                    let _ = fs::create_dir_all(&rejected);
                    let dest = rejected.join(batch.path.file_name().unwrap_or_default());
                    let _ = fs::rename(&batch.path, &dest);
                    eprintln!(
                        "tinyexec-sensor: sentinel: the service rejected {} records ({why}); kept in {}",
                        batch.records,
                        dest.display()
                    );
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
