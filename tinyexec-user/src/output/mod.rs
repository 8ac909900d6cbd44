//! Where records go: stdout, a JSON-lines file, syslog (CEF), in any combination.

mod cef;
mod file;
mod sentinel;
mod syslog;

use std::{
    io::{self, Write},
    path::Path,
};

use anyhow::{Context as _, Result};

use crate::record::Record;

/// Reports a failing output without flooding stderr: the first failure, then every 1000th.
#[derive(Default)]
struct Failures(u64);

impl Failures {
    fn note(&mut self, what: &str, err: &anyhow::Error) {
        self.0 += 1;
        if self.0 == 1 || self.0.is_multiple_of(1000) {
            eprintln!(
                "tinyexec-sensor: {what} failed ({} times so far): {err:#}",
                self.0
            );
        }
    }
}

pub struct Outputs {
    stdout: Option<io::BufWriter<io::Stdout>>,
    file: Option<(file::JsonFile, Failures)>,
    syslog: Option<(syslog::Syslog, Failures)>,
    sentinel: Option<(sentinel::Sentinel, Failures)>,
}

pub struct OutputOptions<'a> {
    pub stdout: bool,
    pub file: Option<&'a Path>,
    pub syslog: Option<&'a str>,
    pub sentinel: Option<&'a Path>,
}

impl Outputs {
    pub fn open(opts: &OutputOptions<'_>) -> Result<Self> {
        Ok(Self {
            stdout: opts.stdout.then(|| io::BufWriter::new(io::stdout())),
            file: opts
                .file
                .map(|p| file::JsonFile::open(p).map(|f| (f, Failures::default())))
                .transpose()?,
            syslog: opts
                .syslog
                .map(|u| syslog::Syslog::open(u).map(|s| (s, Failures::default())))
                .transpose()?,
            sentinel: opts
                .sentinel
                .map(|p| sentinel::Sentinel::open(p).map(|s| (s, Failures::default())))
                .transpose()?,
        })
    }

    /// To every output. Only stdout failing is fatal (nobody reads us any more);
    /// a full disk or an unreachable syslog server is reported and retried.
    pub fn write(&mut self, rec: &Record) -> Result<()> {
        let json = serde_json::to_string(rec).context("encoding a record")?;
        if let Some(out) = &mut self.stdout {
            out.write_all(json.as_bytes())
                .and_then(|()| out.write_all(b"\n"))
                .context("writing to stdout")?;
        }
        if let Some((f, failures)) = &mut self.file
            && let Err(e) = f.write_line(&json)
        {
            failures.note("the output file", &e);
        }
        if let Some((s, failures)) = &mut self.syslog
            && let Err(e) = s.send(rec)
        {
            failures.note("syslog", &e);
        }
        if let Some((s, failures)) = &mut self.sentinel
            && let Err(e) = s.push(rec)
        {
            failures.note("Sentinel", &e);
        }
        Ok(())
    }

    pub fn flush(&mut self) -> Result<()> {
        if let Some(out) = &mut self.stdout {
            out.flush().context("flushing stdout")?;
        }
        Ok(())
    }

    /// The outputs' own counters, for the periodic counters line (Sentinel only, today).
    pub fn counters_line(&self) -> Option<String> {
        self.sentinel
            .as_ref()
            .map(|(s, _)| format!("sentinel: {}", s.counters_line()))
    }

    /// SIGHUP: logrotate moved the file away.
    pub fn reopen(&mut self) {
        if let Some((f, failures)) = &mut self.file
            && let Err(e) = f.reopen()
        {
            failures.note("reopening the output file", &e);
        }
    }
}
