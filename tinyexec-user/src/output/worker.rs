//! The thread behind each output: it takes records from the output's queue
//! and writes them, (re)connecting with backoff when the destination is away.
//! Whatever it waits on, only this output waits: detection and the other
//! outputs go on, and what does not fit the queue is counted dropped.

use std::{
    sync::Arc,
    thread,
    time::{Duration, Instant},
};

use anyhow::Result;

use super::{
    item::Item,
    queue::{Queue, Take},
};

/// First wait after a failed connection, doubled up to [`BACKOFF_MAX`].
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// At most one failure line per output this often (the heartbeat has the totals).
const LOG_EVERY: Duration = Duration::from_secs(10);

/// A destination, driven by its worker.
pub trait Sink: Send + 'static {
    /// Connects or opens when not connected. Err: wait a backoff and try again.
    fn connect(&mut self) -> Result<()> {
        Ok(())
    }
    /// Writes one record. Err: the record is counted failed; with `disconnect`
    /// true the sink reconnects (after a backoff) before the next one.
    fn write(&mut self, item: &Item) -> Result<Written, Failed>;
    /// The queue is empty: push out what is buffered. Returns how many records
    /// held back (stdout's buffer, the Sentinel batch) it settled as written.
    fn idle(&mut self) -> Result<u64, Failed> {
        Ok(0)
    }
    /// How long to wait for the next record before calling [`Sink::idle`] again
    /// (None: until one comes).
    fn wait(&self) -> Option<Duration> {
        None
    }
    /// SIGHUP (logrotate).
    fn reopen(&mut self) -> Result<()> {
        Ok(())
    }
    /// Before each batch of records: reopen if the destination was replaced
    /// (the file: its path no longer names the file open). Err: reopening failed.
    fn follow(&mut self) -> Result<()> {
        Ok(())
    }
    /// The queue closed and is empty: the last flush.
    fn finish(&mut self) -> Result<u64, Failed> {
        self.idle()
    }
}

/// A write that succeeded: how many records it settled (0 for a record held
/// back in a batch, settled later by [`Sink::idle`]).
pub struct Written(pub u64);

/// A write that failed.
pub struct Failed {
    pub error: anyhow::Error,
    /// The connection is broken: reconnect before the next record.
    pub disconnect: bool,
    /// Records settled as failed (the one written, or a whole batch).
    pub records: u64,
    /// The whole sensor must stop (stdout: nobody reads us any more).
    pub fatal: bool,
}

impl Failed {
    pub fn record(error: anyhow::Error, disconnect: bool) -> Self {
        Self {
            error,
            disconnect,
            records: 1,
            fatal: false,
        }
    }
}

/// Reports an output's failures without flooding stderr: the first one, then
/// at most one line per [`LOG_EVERY`] with the count so far, and the recovery.
pub struct Failures {
    what: &'static str,
    total: u64,
    since_log: u64,
    logged: Option<Instant>,
    failing: bool,
}

impl Failures {
    pub fn new(what: &'static str) -> Self {
        Self {
            what,
            total: 0,
            since_log: 0,
            logged: None,
            failing: false,
        }
    }

    pub fn note(&mut self, err: &anyhow::Error) {
        self.total += 1;
        self.since_log += 1;
        self.failing = true;
        if self.logged.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
            log::warn!(
                "{} failed ({} times so far, {} since the last report): {err:#}",
                self.what,
                self.total,
                self.since_log
            );
            self.logged = Some(Instant::now());
            self.since_log = 0;
        }
    }

    pub fn recovered(&mut self) {
        if std::mem::take(&mut self.failing) {
            log::info!("{} works again ({} failures in all)", self.what, self.total);
        }
    }
}

/// Runs `sink` on its own thread until the queue closes and drains.
/// `fatal` is called once if the sink says the sensor must stop.
pub fn spawn(
    name: &'static str,
    mut sink: Box<dyn Sink>,
    queue: Arc<Queue<Arc<Item>>>,
    fatal: Box<dyn Fn(String) + Send>,
) -> Result<thread::JoinHandle<()>> {
    Ok(thread::Builder::new()
        .name(format!("out-{name}"))
        .spawn(move || run(name, sink.as_mut(), &queue, fatal.as_ref()))?)
}

fn run(name: &'static str, sink: &mut dyn Sink, queue: &Queue<Arc<Item>>, fatal: &dyn Fn(String)) {
    let mut w = Worker {
        failures: Failures::new(name),
        queue,
        fatal,
        connected: false,
        backoff: BACKOFF_MIN,
    };
    loop {
        if !w.connected {
            match sink.connect() {
                Ok(()) => {
                    w.connected = true;
                    w.backoff = BACKOFF_MIN;
                }
                Err(e) => {
                    let e = e.context(format!("connecting (retrying in {:?})", w.backoff));
                    w.failures.note(&e);
                    // Records queue meanwhile; the queue's bound drops what does not fit.
                    if w.pause() {
                        return; // closed while away: what is queued cannot go anywhere
                    }
                    continue;
                }
            }
        }
        let items = match queue.take(Some(Duration::ZERO)) {
            Take::Items(items) => items,
            Take::Reopen => {
                reopen(name, sink);
                continue;
            }
            Take::Closed => return w.finish(sink),
            Take::Idle => {
                let flushed = sink.idle();
                if !w.settled(flushed) {
                    return;
                }
                match queue.take(sink.wait()) {
                    Take::Items(items) => items,
                    Take::Reopen => {
                        reopen(name, sink);
                        continue;
                    }
                    Take::Idle => continue,
                    Take::Closed => return w.finish(sink),
                }
            }
        };
        if let Err(e) = sink.follow() {
            log::error!("{name}: reopening failed: {e:#}");
        }
        let mut written = 0;
        let mut items = items.into_iter();
        while let Some(item) = items.next() {
            match sink.write(&item) {
                Ok(Written(n)) => written += n,
                Err(f) => {
                    queue.settle(std::mem::take(&mut written), 0);
                    // Away: what was not tried waits in the queue, in order.
                    let away = f.disconnect || f.fatal;
                    if away {
                        queue.requeue(items.by_ref().collect());
                    }
                    if !w.settled(Err(f)) {
                        return;
                    }
                    if away {
                        break;
                    }
                }
            }
        }
        if written > 0 {
            w.settled(Ok(written));
        }
    }
}

/// SIGHUP, served before the next record. A failure is an error on stderr
/// at once (it comes from an operator's action, not a flood); the sink is then
/// away: its next record fails, and it is opened again with backoff.
fn reopen(name: &str, sink: &mut dyn Sink) {
    if let Err(e) = sink.reopen() {
        log::error!("{name}: reopening failed: {e:#}");
    }
}

struct Worker<'a> {
    failures: Failures,
    queue: &'a Queue<Arc<Item>>,
    fatal: &'a dyn Fn(String),
    connected: bool,
    backoff: Duration,
}

impl Worker<'_> {
    /// Settles an outcome; false when the worker must end (a fatal failure).
    fn settled(&mut self, outcome: Result<u64, Failed>) -> bool {
        match outcome {
            Ok(n) => {
                self.queue.settle(n, 0);
                if n > 0 {
                    self.failures.recovered();
                }
                true
            }
            Err(f) => {
                self.queue.settle(0, f.records);
                if f.fatal {
                    (self.fatal)(format!("{:#}", f.error));
                    // Nothing more can be written; the rest is counted dropped at exit.
                    while !self.queue.pause(Duration::from_hours(1)) {}
                    return false;
                }
                self.failures.note(&f.error);
                if f.disconnect {
                    self.connected = false;
                    if self.pause() {
                        return false;
                    }
                }
                true
            }
        }
    }

    /// Waits the backoff (doubling it); true when the queue closed meanwhile.
    fn pause(&mut self) -> bool {
        let closed = self.queue.pause(self.backoff);
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        closed
    }

    fn finish(&mut self, sink: &mut dyn Sink) {
        let done = sink.finish();
        self.settled(done);
    }
}
