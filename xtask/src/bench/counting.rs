//! A thread that counts something until stopped: background execs, datagrams.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
};

pub struct Counting {
    stop: Arc<AtomicBool>,
    count: Arc<AtomicU64>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Counting {
    /// Calls `step` on a thread of its own until [`Self::finish`], counting
    /// the calls that return true.
    pub fn start(mut step: impl FnMut() -> bool + Send + 'static) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicU64::new(0));
        let (s, c) = (Arc::clone(&stop), Arc::clone(&count));
        let thread = thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if step() {
                    c.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Self {
            stop,
            count,
            thread: Some(thread),
        }
    }

    /// Stops the thread; how many calls returned true.
    pub fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.count.load(Ordering::Relaxed)
    }
}
