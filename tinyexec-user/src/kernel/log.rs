//! The kernel program's diagnostics, forwarded into the sensor's own log.
//!
//! The kernel program logs its rare paths (a tail call that fails, a read
//! that faults, a path or cgroup cut short, a record the ring buffer has no
//! room for) with aya-log-ebpf's `debug!`, into the ring buffer `AYA_LOGS`.
//! Here those records are read and written as the sensor's own lines,
//! `tinyexec-sensor: debug: kernel: STAGE: MESSAGE` (target `kernel`, so
//! `RUST_LOG=kernel=debug` picks them alone).
//!
//! The loader sets `AYA_LOG_LEVEL`, a read-only global, to the most verbose
//! level the log shows for that target, before the verifier sees the program:
//! below debug it knows every log call unreachable and prunes it, so the
//! diagnostics cost nothing when off, not even verified instructions.
//!
//! aya-log's own reader (`aya_log::EbpfLogger`, 0.3 for aya 0.14) is not
//! used: it starts either from an `aya::Ebpf` (made only by aya's loader,
//! which parses the kernel's whole BTF: see `sensor.rs`), or from a program
//! id, through `BPF_PROG_GET_NEXT_ID` and `BPF_MAP_GET_FD_BY_ID`, which need
//! `CAP_SYS_ADMIN`, which the systemd unit does not give the sensor (its
//! `CapabilityBoundingSet=CAP_BPF CAP_PERFMON CAP_SYS_PTRACE`). Its decoder
//! is private and panics on a record it cannot read. The records are
//! decoded here with the wire format's own definitions, from aya-log-common.
// Kernel memory the program wrote: read it as outside input all the same.
#![warn(clippy::indexing_slicing)]

use std::{
    fmt::Write as _,
    net::{Ipv4Addr, Ipv6Addr},
};

use anyhow::{Context as _, Result, bail};
use aya::maps::{MapData, RingBuf};
use aya_log_common::{ArgumentKind, DisplayHint, LogValueLength, RecordFieldKind};
use log::{Level, Metadata};

/// The kernel program's log ring buffer (aya-log-ebpf's map).
pub const MAP: &str = "AYA_LOGS";
/// The kernel program's level switch (aya-log-ebpf's read-only global).
pub const LEVEL: &str = "AYA_LOG_LEVEL";
/// The log target the kernel's lines go to.
const TARGET: &str = "kernel";
/// The ring's size when the kernel logs (aya-log-ebpf's own); off, one page.
const RING_BYTES: u32 = 128 << 10;

/// `log`'s levels and aya-log-common's, most verbose first.
const LEVELS: [(Level, aya_log_common::Level); 5] = [
    (Level::Trace, aya_log_common::Level::Trace),
    (Level::Debug, aya_log_common::Level::Debug),
    (Level::Info, aya_log_common::Level::Info),
    (Level::Warn, aya_log_common::Level::Warn),
    (Level::Error, aya_log_common::Level::Error),
];

/// The value of [`LEVEL`]: the most verbose level the sensor's log shows for
/// the kernel's lines, as aya-log-common numbers it (0: none).
pub fn level() -> u8 {
    let shown = |level: Level| {
        log::logger().enabled(&Metadata::builder().target(TARGET).level(level).build())
    };
    LEVELS
        .into_iter()
        .find(|(level, _)| shown(*level))
        .map_or(0, |(_, wire)| wire.into())
}

/// The size of the [`MAP`] ring: aya-log-ebpf's when the kernel logs at
/// `level`, else the least a ring buffer may be (one page): it stays empty.
pub fn ring_bytes(level: u8) -> u32 {
    if level == 0 {
        // SAFETY: sysconf only reads a system setting.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        u32::try_from(page).unwrap_or(RING_BYTES)
    } else {
        RING_BYTES
    }
}

/// The kernel program's log ring, read into the sensor's log.
pub struct KernelLog {
    ring: RingBuf<MapData>,
}

impl std::fmt::Debug for KernelLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelLog").finish_non_exhaustive()
    }
}

impl KernelLog {
    pub fn new(ring: RingBuf<MapData>) -> Self {
        Self { ring }
    }

    /// Writes every record the kernel has logged since the last call.
    pub fn drain(&mut self) {
        while let Some(item) = self.ring.next() {
            match Line::decode(&item) {
                Ok(line) => log::log!(target: TARGET, line.level, "{}: {}", line.stage, line.text),
                Err(err) => log::warn!(
                    "a log record of the kernel program ({} bytes) could not be read: {err:#}",
                    item.len()
                ),
            }
        }
    }
}

/// One log record of the kernel program.
#[derive(Debug, PartialEq, Eq)]
struct Line {
    level: Level,
    /// The last part of the kernel module's path: the stage's file (`exe_path`).
    stage: String,
    text: String,
}

/// Field and argument kinds as the wire carries them.
const F_TARGET: u8 = RecordFieldKind::Target as u8;
const F_LEVEL: u8 = RecordFieldKind::Level as u8;
const F_MODULE: u8 = RecordFieldKind::Module as u8;
const F_FILE: u8 = RecordFieldKind::File as u8;
const F_LINE: u8 = RecordFieldKind::Line as u8;
const F_NUM_ARGS: u8 = RecordFieldKind::NumArgs as u8;
const HEADER_FIELDS: usize = 6;

/// Takes one `kind, length, value` field off the front of `buf`.
fn field<'a>(buf: &mut &'a [u8]) -> Result<(u8, &'a [u8])> {
    let (&kind, rest) = buf.split_first().context("a field's kind is missing")?;
    let (len, rest) = rest
        .split_first_chunk::<2>()
        .context("a field's length is missing")?;
    let len = usize::from(LogValueLength::from_ne_bytes(*len));
    let (value, rest) = rest
        .split_at_checked(len)
        .with_context(|| format!("a field of {len} bytes runs past the record's end"))?;
    *buf = rest;
    Ok((kind, value))
}

fn text(value: &[u8], what: &str) -> Result<String> {
    String::from_utf8(value.to_vec()).with_context(|| format!("its {what} is not UTF-8"))
}

fn array<const N: usize>(value: &[u8]) -> Result<[u8; N]> {
    value
        .try_into()
        .with_context(|| format!("a value of {} bytes where {N} were expected", value.len()))
}

impl Line {
    /// A record as aya-log-ebpf writes it: its length, then the header's
    /// fields (target, level, module, file, line, number of arguments),
    /// then each argument (a display hint applies to the value after it).
    fn decode(record: &[u8]) -> Result<Self> {
        let (size, _) = record
            .split_first_chunk::<2>()
            .context("the record's length is missing")?;
        let size = usize::from(LogValueLength::from_ne_bytes(*size));
        let mut buf = record.get(2..size).with_context(|| {
            format!("its length {size} is not within its {} bytes", record.len())
        })?;
        let (mut level, mut module, mut args) = (None, None, None);
        for _ in 0..HEADER_FIELDS {
            let (kind, value) = field(&mut buf)?;
            match kind {
                F_LEVEL => level = Some(wire_level(array::<1>(value)?[0])?),
                F_MODULE => module = Some(text(value, "module")?),
                F_NUM_ARGS => args = Some(u32::from_ne_bytes(array(value)?)),
                F_TARGET | F_FILE | F_LINE => {}
                other => bail!("unknown header field {other}"),
            }
        }
        let (Some(level), Some(module), Some(args)) = (level, module, args) else {
            bail!("its header lacks its level, module or number of arguments");
        };
        let mut text = String::new();
        let mut hint = None;
        for _ in 0..args {
            let (kind, value) = field(&mut buf)?;
            if kind == ArgumentKind::DisplayHint as u8 {
                hint = Some(array::<1>(value)?[0]);
                continue;
            }
            argument(&mut text, kind, value, hint.take())?;
        }
        let stage = module.rsplit("::").next().unwrap_or_default().to_owned();
        Ok(Self { level, stage, text })
    }
}

fn wire_level(v: u8) -> Result<Level> {
    LEVELS
        .into_iter()
        .find(|(_, wire)| u8::from(*wire) == v)
        .map(|(level, _)| level)
        .with_context(|| format!("unknown level {v}"))
}

/// An integer as its hint asks: decimal, or hexadecimal.
fn integer(
    out: &mut String,
    v: impl std::fmt::Display + std::fmt::LowerHex + std::fmt::UpperHex,
    hint: Option<u8>,
) {
    let _ = match hint {
        Some(h) if h == DisplayHint::LowerHex as u8 => write!(out, "{v:x}"),
        Some(h) if h == DisplayHint::UpperHex as u8 => write!(out, "{v:X}"),
        _ => write!(out, "{v}"),
    };
}

/// Appends one argument: a literal part of the message or a value.
fn argument(out: &mut String, kind: u8, value: &[u8], hint: Option<u8>) -> Result<()> {
    macro_rules! int {
        ($t:ty) => {
            integer(out, <$t>::from_ne_bytes(array(value)?), hint)
        };
    }
    let upper = hint == Some(DisplayHint::UpperHex as u8);
    match kind {
        k if k == ArgumentKind::Str as u8 => out.push_str(&text(value, "text")?),
        k if k == ArgumentKind::I8 as u8 => int!(i8),
        k if k == ArgumentKind::I16 as u8 => int!(i16),
        k if k == ArgumentKind::I32 as u8 => int!(i32),
        k if k == ArgumentKind::I64 as u8 || k == ArgumentKind::Isize as u8 => int!(i64),
        k if k == ArgumentKind::U8 as u8 => int!(u8),
        k if k == ArgumentKind::U16 as u8 => int!(u16),
        k if k == ArgumentKind::U32 as u8 => int!(u32),
        k if k == ArgumentKind::U64 as u8 || k == ArgumentKind::Usize as u8 => int!(u64),
        k if k == ArgumentKind::F32 as u8 => {
            let _ = write!(out, "{}", f32::from_ne_bytes(array(value)?));
        }
        k if k == ArgumentKind::F64 as u8 => {
            let _ = write!(out, "{}", f64::from_ne_bytes(array(value)?));
        }
        k if k == ArgumentKind::Pointer as u8 => {
            let _ = write!(out, "{:#x}", u64::from_ne_bytes(array(value)?));
        }
        k if k == ArgumentKind::Ipv4Addr as u8
            || (k == ArgumentKind::ArrU8Len4 as u8 && hint == Some(DisplayHint::Ip as u8)) =>
        {
            let _ = write!(out, "{}", Ipv4Addr::from(array::<4>(value)?));
        }
        k if k == ArgumentKind::Ipv6Addr as u8
            || ((k == ArgumentKind::ArrU8Len16 as u8 || k == ArgumentKind::ArrU16Len8 as u8)
                && hint == Some(DisplayHint::Ip as u8)) =>
        {
            let _ = write!(out, "{}", Ipv6Addr::from(array::<16>(value)?));
        }
        k if k == ArgumentKind::ArrU8Len6 as u8 => {
            let sep = if upper { "-" } else { ":" };
            let parts: Vec<String> = value
                .iter()
                .map(|b| {
                    if upper {
                        format!("{b:02X}")
                    } else {
                        format!("{b:02x}")
                    }
                })
                .collect();
            out.push_str(&parts.join(sep));
        }
        // Bytes and the other arrays: hexadecimal.
        k if k == ArgumentKind::Bytes as u8
            || k == ArgumentKind::ArrU8Len4 as u8
            || k == ArgumentKind::ArrU8Len16 as u8
            || k == ArgumentKind::ArrU16Len8 as u8 =>
        {
            for b in value {
                let _ = if upper {
                    write!(out, "{b:02X}")
                } else {
                    write!(out, "{b:02x}")
                };
            }
        }
        other => bail!("unknown argument kind {other}"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use aya_log_common::{Field, Header};

    use super::*;

    /// A record exactly as aya-log-ebpf's `debug!` writes it, with aya-log-common's own encoder.
    fn record(
        level: aya_log_common::Level,
        module: &str,
        args: &[(ArgumentKind, Vec<u8>)],
    ) -> Vec<u8> {
        let header = Header::new(
            module,
            level,
            module,
            "src/stages/exe_path.rs",
            27,
            u32::try_from(args.len()).unwrap(),
        )
        .unwrap();
        let mut body = Vec::new();
        let mut put = |s: &[u8]| {
            body.extend_from_slice(s);
            Some(())
        };
        header.with_bytes(&mut put).unwrap();
        for (kind, value) in args {
            Field::new(*kind, value.as_slice())
                .unwrap()
                .with_bytes(&mut put)
                .unwrap();
        }
        let size = LogValueLength::try_from(body.len() + 2).unwrap();
        let mut rec = size.to_ne_bytes().to_vec();
        rec.extend(body);
        // The kernel reserves a power of two of at least 64 bytes: the tail is padding.
        rec.resize(rec.len().next_power_of_two().max(64), 0);
        rec
    }

    fn arg(a: &impl aya_log_common::Argument) -> (ArgumentKind, Vec<u8>) {
        let (kind, value) = a.as_argument();
        (kind, value.as_ref().to_vec())
    }

    #[test]
    fn a_record_of_the_kernel_program_reads_as_it_was_written() {
        let rec = record(
            aya_log_common::Level::Debug,
            "tinyexec::stages::exe_path",
            &[
                arg(&"pid "),
                arg(&DisplayHint::Default),
                arg(&4242u32),
                arg(&": flags "),
                arg(&DisplayHint::LowerHex),
                arg(&0x1011u32),
                arg(&", error "),
                arg(&DisplayHint::Default),
                arg(&-14i64),
                arg(&", at "),
                arg(&DisplayHint::Ip),
                arg(&[10u8, 0, 0, 1]),
            ],
        );
        assert_eq!(
            Line::decode(&rec).unwrap(),
            Line {
                level: Level::Debug,
                stage: "exe_path".to_owned(),
                text: "pid 4242: flags 1011, error -14, at 10.0.0.1".to_owned(),
            }
        );
    }

    #[test]
    fn a_record_cut_short_or_garbled_is_an_error_not_a_panic() {
        let rec = record(
            aya_log_common::Level::Warn,
            "tinyexec::maps",
            &[
                arg(&"the tail call to stage "),
                arg(&DisplayHint::Default),
                arg(&3u32),
            ],
        );
        let size = usize::from(u16::from_ne_bytes([rec[0], rec[1]]));
        for cut in 0..size {
            let mut short = rec[..cut].to_vec();
            if cut >= 2 {
                // The length says what it was cut to.
                short[..2].copy_from_slice(&u16::try_from(cut).unwrap().to_ne_bytes());
            }
            assert!(Line::decode(&short).is_err(), "cut at {cut}");
        }
        assert_eq!(Line::decode(&rec).unwrap().text, "the tail call to stage 3");
        // The level's value: after the length, the target's field, the level's kind and length.
        let mut bad_level = rec.clone();
        bad_level[2 + 3 + "tinyexec::maps".len() + 3] = 9;
        assert!(
            Line::decode(&bad_level)
                .unwrap_err()
                .to_string()
                .contains("level")
        );
        // Every byte flipped in turn: an error or a line, never a panic.
        for i in 0..size {
            let mut flipped = rec.clone();
            flipped[i] ^= 0xff;
            let _ = Line::decode(&flipped);
        }
    }

    #[test]
    fn no_logger_means_no_kernel_log() {
        // The unit tests set no logger: nothing would show, so the kernel logs nothing.
        assert_eq!(level(), 0);
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        assert_eq!(ring_bytes(0), u32::try_from(page).unwrap());
        assert_eq!(
            ring_bytes(u8::from(aya_log_common::Level::Debug)),
            RING_BYTES
        );
    }
}
