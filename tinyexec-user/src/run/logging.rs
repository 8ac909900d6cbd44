//! The daemon's messages on stderr: `log`'s macros, written by `env_logger` in
//! the lines the sensor has always printed (`tinyexec-sensor: MSG`, with
//! `warning: `, `error: ` or `debug: ` after the name), one write per message.
//! Under systemd, with stderr going to the journal, each line starts with its
//! sd-daemon priority (`<4>`) so that journald records it.

use std::{
    ffi::OsStr,
    fs::{File, Metadata},
    io::{self, Write},
    os::{fd::AsFd as _, unix::fs::MetadataExt as _},
};

use anyhow::{Result, anyhow, bail};
use log::{LevelFilter, Record};

/// What every line starts with.
const NAME: &str = "tinyexec-sensor";
/// Messages from this crate carry no origin; other crates' (aya's, rustls')
/// say where they come from.
const CRATE: &str = env!("CARGO_CRATE_NAME");

/// `--log-level` / `log_level`: the least severe messages shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl From<Level> for LevelFilter {
    fn from(level: Level) -> Self {
        match level {
            Level::Error => LevelFilter::Error,
            Level::Warn => LevelFilter::Warn,
            Level::Info => LevelFilter::Info,
            Level::Debug => LevelFilter::Debug,
            Level::Trace => LevelFilter::Trace,
        }
    }
}

/// Starts logging at `level`; `RUST_LOG` (`env_logger`'s syntax, e.g. `debug`
/// or `info,aya=debug`), when set, applies over it. A `RUST_LOG` that does not
/// parse is an error rather than a warning lost in the log.
pub fn init(level: Level) -> Result<()> {
    let rust_log = match std::env::var("RUST_LOG") {
        Ok(spec) => Some(spec),
        Err(std::env::VarError::NotPresent) => None,
        Err(std::env::VarError::NotUnicode(_)) => bail!("RUST_LOG is not UTF-8"),
    };
    init_with(level, rust_log.as_deref())
}

fn init_with(level: Level, rust_log: Option<&str>) -> Result<()> {
    let mut builder = env_logger::Builder::new();
    builder.filter_level(level.into());
    if let Some(spec) = rust_log.filter(|s| !s.trim().is_empty()) {
        // env_logger's own parse only warns on stderr and goes on.
        env_filter::Builder::new()
            .try_parse(spec)
            .map_err(|e| anyhow!("RUST_LOG={spec:?}: {e}"))?;
        builder.parse_filters(spec);
    }
    let journal = stderr_is_journal(std::env::var_os("JOURNAL_STREAM").as_deref());
    builder
        .format(move |out, record| write_record(out, journal, record))
        .try_init()
        .map_err(|e| anyhow!("starting the log: {e}"))
}

/// Whether stderr is the journal stream systemd says it connected
/// (`JOURNAL_STREAM=DEV:INODE`): a child that inherited the variable but
/// writes elsewhere (a pipe, a terminal) must not prefix priorities.
fn stderr_is_journal(stream: Option<&OsStr>) -> bool {
    let Some(stream) = stream else {
        return false;
    };
    // A duplicate of fd 2, for its metadata without unsafe `fstat`.
    let stderr = io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map(File::from)
        .and_then(|f| f.metadata());
    stderr.is_ok_and(|md| is_stream(stream, &md))
}

/// Whether `stream` (`DEV:INODE`, decimal) names the file `md` describes.
fn is_stream(stream: &OsStr, md: &Metadata) -> bool {
    let ids = stream.to_str().and_then(|s| s.split_once(':'));
    ids.is_some_and(|(dev, ino)| dev.parse() == Ok(md.dev()) && ino.parse() == Ok(md.ino()))
}

/// The word after the name, per level (none for info).
fn label(level: log::Level) -> &'static str {
    match level {
        log::Level::Error => "error: ",
        log::Level::Warn => "warning: ",
        log::Level::Info => "",
        log::Level::Debug | log::Level::Trace => "debug: ",
    }
}

/// The sd-daemon priority (`sd-daemon(3)`): err, warning, info, debug.
fn priority(level: log::Level) -> u8 {
    match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    }
}

/// One message, a line per line of its text. In the journal every line
/// carries the priority (journald would give a bare one the default, info).
fn write_record(out: &mut impl Write, journal: bool, record: &Record<'_>) -> io::Result<()> {
    let level = record.level();
    let target = record.target();
    let origin = if target.split("::").next() == Some(CRATE) {
        String::new()
    } else {
        format!("{target}: ")
    };
    let head = format!("{NAME}: {}{origin}", label(level));
    if !journal {
        return writeln!(out, "{head}{}", record.args());
    }
    let text = record.args().to_string();
    let p = priority(level);
    for (i, line) in text.split('\n').enumerate() {
        if i == 0 {
            writeln!(out, "<{p}>{head}{line}")?;
        } else {
            writeln!(out, "<{p}>{line}")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(journal: bool, level: log::Level, target: &str, msg: &str) -> String {
        let mut out = Vec::new();
        write_record(
            &mut out,
            journal,
            &Record::builder()
                .level(level)
                .target(target)
                .args(format_args!("{msg}"))
                .build(),
        )
        .expect("write");
        String::from_utf8(out).expect("UTF-8")
    }

    #[test]
    fn each_level_reads_as_the_sensor_always_wrote_it() {
        let t = "tinyexec_user::run";
        for (level, want) in [
            (log::Level::Info, "tinyexec-sensor: ready: x\n"),
            (log::Level::Warn, "tinyexec-sensor: warning: ready: x\n"),
            (log::Level::Error, "tinyexec-sensor: error: ready: x\n"),
            (log::Level::Debug, "tinyexec-sensor: debug: ready: x\n"),
            (log::Level::Trace, "tinyexec-sensor: debug: ready: x\n"),
        ] {
            assert_eq!(line(false, level, t, "ready: x"), want);
        }
        assert_eq!(
            line(false, log::Level::Warn, "aya::bpf", "object BTF"),
            "tinyexec-sensor: warning: aya::bpf: object BTF\n"
        );
        // Continuation lines as they were: the message's own text.
        assert_eq!(
            line(false, log::Level::Warn, t, "failed:\nf:2:1: bad"),
            "tinyexec-sensor: warning: failed:\nf:2:1: bad\n"
        );
    }

    #[test]
    fn in_the_journal_every_line_carries_its_priority() {
        let t = "tinyexec_user::pipeline";
        assert_eq!(
            line(true, log::Level::Info, t, "ready"),
            "<6>tinyexec-sensor: ready\n"
        );
        assert_eq!(
            line(true, log::Level::Warn, t, "failed:\nf:2:1: bad"),
            "<4>tinyexec-sensor: warning: failed:\n<4>f:2:1: bad\n"
        );
        assert_eq!(
            line(true, log::Level::Error, t, "x"),
            "<3>tinyexec-sensor: error: x\n"
        );
        assert_eq!(
            line(true, log::Level::Debug, t, "x"),
            "<7>tinyexec-sensor: debug: x\n"
        );
    }

    #[test]
    fn the_journal_is_recognised_by_device_and_inode_only() {
        let file = exe_metadata();
        let mine = format!("{}:{}", file.dev(), file.ino());
        assert!(is_stream(OsStr::new(&mine), &file));
        let other = format!("{}:{}", file.dev(), file.ino() + 1);
        assert!(!is_stream(OsStr::new(&other), &file));
        for bad in ["", ":", "x:y", "1", "1:2:3"] {
            assert!(!is_stream(OsStr::new(bad), &file), "{bad:?}");
        }
        assert!(!stderr_is_journal(None));
    }

    fn exe_metadata() -> Metadata {
        std::fs::metadata(std::env::current_exe().expect("test binary")).expect("metadata")
    }

    #[test]
    fn a_rust_log_that_does_not_parse_names_itself() {
        let err = init_with(Level::Info, Some("aya=loud")).expect_err("refused");
        assert!(err.to_string().contains("RUST_LOG=\"aya=loud\""), "{err}");
    }
}
