//! One output's bounded queue, and the counters that account for every record
//! offered to it: each ends up written, failed, dropped or still queued.
//!
//! When the queue is full the *newest* record is dropped (tail drop), not the
//! oldest: what the output delivers stays in order with one gap per outage,
//! whose size the heartbeat states, and the records kept are the earliest of
//! the outage: the start of an incident, the first alert of a file (its
//! repeats are aggregated anyway). Alerts, heartbeats and loss records have a
//! reserve beyond the bound, so a queue full of ordinary `--all-execs` records
//! still takes them. A loss record is never dropped: the kernel's losses it
//! counts would be missing from `sum(tinyexec.lost_since_previous)`.
//!
//! The bound is in records and in bytes, whichever is reached first: a flood
//! of execs with kilobytes of arguments and paths makes records ten times the
//! ordinary size, and a bound in records alone let a sensor grow to 90 MiB.

use std::{
    collections::VecDeque,
    sync::{Condvar, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

/// What the queue needs to know of a record.
pub trait Entry: Sized {
    /// May use the reserve: alerts, heartbeats, loss records.
    fn priority(&self) -> bool;
    /// A loss record: never dropped (see [`Queue::push_all`]).
    fn is_loss(&self) -> bool;
    /// The memory it holds, about: what the byte bound counts.
    fn bytes(&self) -> usize;
    /// This loss record, also counting the losses of `older`, which it replaces.
    #[must_use]
    fn merged_with(&self, older: &Self) -> Self;
}

/// Counters of one output, as the heartbeat reports them. At any moment,
/// records offered = written + failed + dropped + queued.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Handed to the destination (the kernel's socket or file, or the spool).
    pub written: u64,
    /// Tried and not delivered: the write failed.
    pub failed: u64,
    /// Never tried: the queue was full.
    pub dropped: u64,
    /// Waiting in the queue or being written now.
    pub queued: u64,
}

struct State<T> {
    items: VecDeque<T>,
    /// The bytes of `items`.
    items_bytes: usize,
    /// Taken by the worker and not settled yet (a record being written, a
    /// batch being built): their bytes, oldest first (records are settled in
    /// the order taken, and the untried ones come back from the end).
    in_flight: VecDeque<usize>,
    in_flight_bytes: usize,
    counts: Counts,
    closed: bool,
    /// SIGHUP: the worker reopens its destination before it takes another record.
    reopen: bool,
    /// Workers waiting for a record: only then does a push pay for a wake-up.
    waiting: usize,
}

pub struct Queue<T> {
    state: Mutex<State<T>>,
    ready: Condvar,
    /// Records and bytes held at most; priority records (alerts,
    /// heartbeats, loss records) may use a quarter more.
    capacity: Bound,
    reserve: Bound,
}

/// A bound in records and in bytes.
#[derive(Clone, Copy, Debug)]
pub struct Bound {
    pub records: usize,
    pub bytes: usize,
}

/// Records a worker takes at once: one lock and one wake-up for a burst.
const BATCH: usize = 256;

/// What the worker gets from [`Queue::take`].
pub enum Take<T> {
    /// The oldest records, up to [`BATCH`], now in flight.
    Items(Vec<T>),
    /// Nothing arrived within the wait.
    Idle,
    /// A reopen was requested (SIGHUP): reopen before taking another record,
    /// so that every record queued after the request goes to the new file.
    Reopen,
    /// Closed and empty: the worker is done.
    Closed,
}

impl<T: Entry> Queue<T> {
    pub fn new(capacity: Bound) -> Self {
        let capacity = Bound {
            records: capacity.records.max(1),
            bytes: capacity.bytes.max(1),
        };
        Self {
            state: Mutex::new(State {
                items: VecDeque::new(),
                items_bytes: 0,
                in_flight: VecDeque::new(),
                in_flight_bytes: 0,
                counts: Counts::default(),
                closed: false,
                reopen: false,
                waiting: 0,
            }),
            ready: Condvar::new(),
            capacity,
            reserve: Bound {
                records: (capacity.records / 4).max(1),
                bytes: (capacity.bytes / 4).max(1),
            },
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues each record, or counts it dropped when the queue is full
    /// (priority records: when the reserve is full too). A loss record that
    /// finds the reserve full is not dropped: it replaces the loss record still
    /// waiting in the queue, counting that one's losses too (the older one's
    /// sequence number is counted dropped), or, when none waits, it is queued
    /// beyond the bound (so at most one record waits beyond it). One lock and at
    /// most one wake-up for them all; never blocks beyond the lock.
    pub fn push_all(&self, items: impl IntoIterator<Item = T>) {
        let mut s = self.lock();
        for item in items {
            let (records, bytes) = if item.priority() {
                (
                    self.capacity.records + self.reserve.records,
                    self.capacity.bytes + self.reserve.bytes,
                )
            } else {
                (self.capacity.records, self.capacity.bytes)
            };
            // The batch a worker is writing still counts: the bound is on
            // every record the output holds. A record larger than the whole
            // bound still goes into an empty queue.
            let held = s.items.len() + s.in_flight.len();
            let held_bytes = s.items_bytes + s.in_flight_bytes;
            let fits = held < records && (held == 0 || held_bytes + item.bytes() <= bytes);
            if s.closed {
                s.counts.dropped += 1;
            } else if fits {
                s.items_bytes += item.bytes();
                s.items.push_back(item);
            } else if item.is_loss() {
                let older = s
                    .items
                    .iter()
                    .rposition(Entry::is_loss)
                    .and_then(|i| s.items.remove(i));
                let item = match older {
                    Some(older) => {
                        s.counts.dropped += 1;
                        s.items_bytes -= older.bytes();
                        item.merged_with(&older)
                    }
                    None => item,
                };
                s.items_bytes += item.bytes();
                s.items.push_back(item);
            } else {
                s.counts.dropped += 1;
            }
        }
        let wake = s.waiting > 0 && !s.items.is_empty();
        drop(s);
        if wake {
            self.ready.notify_one();
        }
    }

    /// The oldest records (now in flight), waiting up to `wait` for one (None:
    /// until one comes or the queue closes); first [`Take::Reopen`] when a
    /// reopen was requested.
    pub fn take(&self, wait: Option<Duration>) -> Take<T> {
        let deadline = wait.map(|w| Instant::now() + w);
        let mut s = self.lock();
        loop {
            if std::mem::take(&mut s.reopen) {
                return Take::Reopen;
            }
            if !s.items.is_empty() {
                let n = s.items.len().min(BATCH);
                let items: Vec<T> = s.items.drain(..n).collect();
                for item in &items {
                    s.items_bytes -= item.bytes();
                    s.in_flight_bytes += item.bytes();
                    s.in_flight.push_back(item.bytes());
                }
                return Take::Items(items);
            }
            if s.closed {
                return Take::Closed;
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left.is_some_and(|l| l.is_zero()) {
                return Take::Idle;
            }
            s.waiting += 1;
            s = match left {
                None => self.ready.wait(s).unwrap_or_else(PoisonError::into_inner),
                Some(l) => {
                    self.ready
                        .wait_timeout(s, l)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
            s.waiting -= 1;
        }
    }

    /// Puts records taken but not tried back at the front, in their order
    /// (the destination went away in the middle of a batch).
    pub fn requeue(&self, untried: Vec<T>) {
        let mut s = self.lock();
        for item in untried.into_iter().rev() {
            if let Some(bytes) = s.in_flight.pop_back() {
                s.in_flight_bytes -= bytes;
            }
            s.items_bytes += item.bytes();
            s.items.push_front(item);
        }
    }

    /// Settles records taken earlier: `written` delivered, `failed` not.
    pub fn settle(&self, written: u64, failed: u64) {
        let mut s = self.lock();
        for _ in 0..written + failed {
            match s.in_flight.pop_front() {
                Some(bytes) => s.in_flight_bytes -= bytes,
                None => break,
            }
        }
        s.counts.written += written;
        s.counts.failed += failed;
    }

    /// Waits up to `d`, returning early when the queue closes; true when closed.
    pub fn pause(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        let mut s = self.lock();
        while !s.closed {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            s = self
                .ready
                .wait_timeout(s, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }

    /// The counters, all at one instant.
    pub fn counts(&self) -> Counts {
        let s = self.lock();
        Counts {
            queued: (s.items.len() + s.in_flight.len()) as u64,
            ..s.counts
        }
    }

    /// No more records: the worker delivers what is queued, then ends.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }

    /// Records still queued, counted dropped: the worker did not finish at exit.
    pub fn abandon(&self) -> u64 {
        let mut s = self.lock();
        let n = s.items.len() as u64;
        s.items.clear();
        s.items_bytes = 0;
        s.counts.dropped += n;
        n
    }

    /// SIGHUP: the worker's next [`Queue::take`] says [`Take::Reopen`], also
    /// when it is waiting in one now.
    pub fn request_reopen(&self) {
        self.lock().reopen = true;
        self.ready.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record as the queue sees it: its sequence number, whether it is an
    /// alert, and the losses it counts if it is a loss record.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    struct R(u64, bool, Option<u64>);

    impl Entry for R {
        fn priority(&self) -> bool {
            self.1 || self.2.is_some()
        }
        fn is_loss(&self) -> bool {
            self.2.is_some()
        }
        fn bytes(&self) -> usize {
            100
        }
        fn merged_with(&self, older: &Self) -> Self {
            R(
                self.0,
                false,
                Some(self.2.unwrap_or(0) + older.2.unwrap_or(0)),
            )
        }
    }

    fn plain(seq: u64) -> R {
        R(seq, false, None)
    }

    /// A bound in records only.
    fn records(records: usize) -> Bound {
        Bound {
            records,
            bytes: usize::MAX / 2,
        }
    }

    fn seqs(rs: &[R]) -> Vec<u64> {
        rs.iter().map(|r| r.0).collect()
    }

    #[test]
    fn every_record_is_accounted_for() {
        let q = Queue::new(records(4));
        q.push_all((0..6).map(plain));
        // Priority records have a reserve of capacity / 4.
        q.push_all([R(100, true, None), R(101, true, None)]);
        assert_eq!(
            q.counts(),
            Counts {
                written: 0,
                failed: 0,
                dropped: 3,
                queued: 5
            }
        );
        let Take::Items(batch) = q.take(Some(Duration::ZERO)) else {
            panic!("items")
        };
        assert_eq!(
            seqs(&batch),
            [0, 1, 2, 3, 100],
            "oldest first; the newest were dropped"
        );
        assert_eq!(q.counts().queued, 5, "in flight still counts as queued");
        q.settle(1, 1);
        // The destination went away after two: the rest goes back, in order.
        q.requeue(batch[2..].to_vec());
        let Take::Items(again) = q.take(None) else {
            panic!("items")
        };
        assert_eq!(seqs(&again), [2, 3, 100]);
        q.settle(1, 0);
        let c = q.counts();
        assert_eq!((c.written, c.failed, c.dropped, c.queued), (2, 1, 3, 2));
        assert_eq!(c.written + c.failed + c.dropped + c.queued, 8);
        q.requeue(again[1..].to_vec());
        q.close();
        assert_eq!(q.abandon(), 2);
        assert!(matches!(q.take(None), Take::Closed));
        assert!(matches!(
            Queue::<R>::new(records(1)).take(Some(Duration::from_millis(1))),
            Take::Idle
        ));
    }

    #[test]
    fn a_loss_record_is_never_dropped() {
        let q = Queue::new(records(4));
        q.push_all((0..4).map(plain));
        // The reserve (1) taken by an alert: full even for priority records.
        q.push_all([R(4, true, None), R(5, true, None)]);
        // No loss record waits: this one goes beyond the bound.
        q.push_all([R(6, false, Some(3)), plain(7)]);
        // The next ones replace it, carrying its losses.
        q.push_all([R(8, false, Some(5)), R(9, false, Some(1))]);
        let c = q.counts();
        assert_eq!((c.dropped, c.queued), (4, 6), "5, 7, then 6 and 8 merged");
        let Take::Items(batch) = q.take(None) else {
            panic!("items")
        };
        assert_eq!(
            batch.last(),
            Some(&R(9, false, Some(9))),
            "the last loss record counts every loss: {batch:?}"
        );
        assert_eq!(seqs(&batch), [0, 1, 2, 3, 4, 9]);
    }

    #[test]
    fn a_reopen_is_taken_before_any_record() {
        let q = Queue::new(records(4));
        q.push_all([plain(1)]);
        q.request_reopen();
        q.push_all([plain(2)]);
        assert!(matches!(q.take(None), Take::Reopen));
        let Take::Items(batch) = q.take(None) else {
            panic!("items")
        };
        assert_eq!(seqs(&batch), [1, 2]);
    }

    #[test]
    fn the_bound_in_bytes_holds_with_records_in_flight() {
        // Records of 100 bytes: 3 fit in 350; priority records have 87 more.
        let q = Queue::new(Bound {
            records: 100,
            bytes: 350,
        });
        q.push_all((0..5).map(plain));
        q.push_all([R(10, true, None), R(11, true, None)]);
        assert_eq!((q.counts().queued, q.counts().dropped), (4, 3));
        let Take::Items(batch) = q.take(None) else {
            panic!("items")
        };
        assert_eq!(seqs(&batch), [0, 1, 2, 10]);
        // Taken but not settled: still held, still counted against the bound.
        q.push_all([plain(20)]);
        assert_eq!(q.counts().dropped, 4);
        q.settle(2, 0);
        q.requeue(batch[2..].to_vec());
        q.push_all([plain(21), plain(22)]);
        let Take::Items(batch) = q.take(None) else {
            panic!("items")
        };
        assert_eq!(seqs(&batch), [2, 10, 21], "two settled made room for one");
        let c = q.counts();
        assert_eq!(c.written + c.failed + c.dropped + c.queued, 10);
    }

    #[test]
    fn a_record_larger_than_the_bound_goes_into_an_empty_queue() {
        let q = Queue::new(Bound {
            records: 10,
            bytes: 50,
        });
        q.push_all([plain(1), plain(2)]);
        let c = q.counts();
        assert_eq!((c.queued, c.dropped), (1, 1));
    }
}
