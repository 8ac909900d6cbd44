//! JSON lines on stdout, buffered and flushed whenever the queue runs empty
//! (one write(2) for a burst, and every record out as soon as there is no
//! other) and after every alert, which waits for no burst to end.
//! stdout failing means nobody reads us any more: the sensor stops.

use std::io::{self, BufWriter, Write};

use super::{
    item::Item,
    worker::{Failed, Sink, Written},
};

pub struct Stdout {
    out: BufWriter<io::Stdout>,
    /// Records in the buffer, settled when it is flushed.
    buffered: u64,
}

impl Stdout {
    pub fn new() -> Self {
        Self {
            out: BufWriter::with_capacity(64 << 10, io::stdout()),
            buffered: 0,
        }
    }

    fn fatal(&mut self, err: io::Error, what: &str) -> Failed {
        Failed {
            error: anyhow::Error::new(err).context(what.to_owned()),
            disconnect: false,
            records: std::mem::take(&mut self.buffered),
            fatal: true,
        }
    }
}

impl Sink for Stdout {
    fn write(&mut self, item: &Item) -> Result<Written, Failed> {
        self.buffered += 1;
        let r = self.out.write_all(item.line());
        match r {
            Ok(()) if item.priority() => self.idle().map(Written),
            Ok(()) => Ok(Written(0)),
            Err(e) => Err(self.fatal(e, "writing to stdout")),
        }
    }

    fn idle(&mut self) -> Result<u64, Failed> {
        match self.out.flush() {
            Ok(()) => Ok(std::mem::take(&mut self.buffered)),
            Err(e) => Err(self.fatal(e, "flushing stdout")),
        }
    }
}
