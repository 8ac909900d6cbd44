//! A record on its way to the outputs: what every output's queue and worker
//! hold, its JSON made once for all of them.

use std::sync::Arc;

use bytes::Bytes;

use super::queue::Entry;
use crate::record::{Action, Kind, Record, builder};

/// A record on its way to the outputs, shared by all of them, with its JSON
/// line: made once, when the record is queued (its size is what the queues'
/// byte bound counts), and written as is by every output.
pub struct Item {
    pub record: Record,
    line: Bytes,
}

impl Item {
    pub fn new(record: Record) -> Self {
        thread_local! {
            /// Where each line is written before it is copied out at its
            /// size: one allocation per record, of the size it needs
            /// (measured: growing a fresh buffer, or one of a guessed size,
            /// cost 8 % more CPU per `--all-execs` record).
            static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let line = SCRATCH.with_borrow_mut(|line| {
            line.clear();
            // Our records hold only strings, numbers, booleans and arrays of
            // them: serde_json cannot fail on them.
            if let Err(e) = serde_json::to_writer(&mut *line, &record) {
                line.clear();
                line.extend_from_slice(
                    format!("{{\"tinyexec_encoding_error\":{:?}}}", e.to_string()).as_bytes(),
                );
            }
            line.push(b'\n');
            Bytes::copy_from_slice(line)
        });
        Self { record, line }
    }

    /// The record as one line of JSON, the newline included.
    pub fn line(&self) -> &Bytes {
        &self.line
    }

    /// The record's JSON, without the newline.
    pub fn json(&self) -> &[u8] {
        self.line.strip_suffix(b"\n").unwrap_or(&self.line)
    }

    /// The memory it holds, about: the record's strings hold the text its
    /// JSON line holds (arguments, paths), once more.
    fn bytes(&self) -> usize {
        std::mem::size_of::<Self>() + 2 * self.line.len()
    }

    /// Alerts, heartbeats and loss records may use the queues' reserve: a
    /// queue full of ordinary records still takes them (heartbeats are a few a
    /// minute, loss records at most one per 200 ms tick and heartbeat).
    pub fn priority(&self) -> bool {
        self.record.event.kind == Kind::Alert
            || self.record.event.action == Action::Heartbeat
            || self.is_loss()
    }

    fn is_loss(&self) -> bool {
        self.record.lost.is_some()
    }
}

impl Entry for Arc<Item> {
    fn priority(&self) -> bool {
        Item::priority(self)
    }

    fn is_loss(&self) -> bool {
        Item::is_loss(self)
    }

    fn bytes(&self) -> usize {
        Item::bytes(self)
    }

    /// The same loss record, its count and `lost_since_previous` raised by
    /// `older`'s: the queue's copy only (other outputs keep theirs).
    fn merged_with(&self, older: &Self) -> Self {
        let (new, old) = (&self.record, &older.record);
        let count = |r: &Record| r.lost.as_ref().map_or(0, |l| l.count);
        let total = new.lost.as_ref().map_or(0, |l| l.total);
        let mut rec = builder::lost_record(
            count(old) + count(new),
            total,
            new.timestamp.clone(),
            &new.host,
            &new.agent,
        );
        rec.event.sequence = new.event.sequence;
        rec.tinyexec.lost_since_previous =
            old.tinyexec.lost_since_previous + new.tinyexec.lost_since_previous;
        Arc::new(Item::new(rec))
    }
}
