//! Loading and attaching the kernel programs.

use std::{
    collections::HashMap,
    os::fd::{AsFd as _, AsRawFd as _, RawFd},
    path::Path,
};

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, Map, MapData, PerCpuArray, ProgramArray, RingBuf},
    programs::{ProgramError, RawTracePoint},
};
use tinyexec_ebpf::{Config, control, names, stage};

use crate::{btf, offsets, verifier};

/// The eBPF object built from `tinyexec-ebpf` by build.rs.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tinyexec"));

pub struct LoadOptions<'a> {
    pub btf_path: &'a Path,
    pub config: Config,
    /// Ring buffer size in bytes (a power of two, at least one page).
    pub ring_buffer_bytes: u32,
}

/// Loaded and attached programs; dropping it detaches them.
pub struct Sensor {
    /// Owns the programs and their links: dropping it detaches.
    pub ebpf: Ebpf,
    pub events: RingBuf<MapData>,
    pub lost: PerCpuArray<MapData, u64>,
    /// Execs the entry program saw, per CPU.
    pub execs: PerCpuArray<MapData, u64>,
    /// The stages the entry tail-calls. Kept open: the kernel empties a
    /// program array when its last user-space descriptor closes.
    pub stages: ProgramArray<MapData>,
    pub control: Array<MapData, u32>,
    /// Instructions the verifier processed, per program, in load order.
    pub verified: Vec<(&'static str, Option<u32>)>,
}

/// The kernel's bound on instructions processed while verifying one program.
pub const VERIFIER_LIMIT: u32 = 1_000_000;

/// How many verifier lines an error shows: the cause is at the end.
const VERIFIER_TAIL: usize = 30;

fn refused(program: &str, err: ProgramError) -> anyhow::Error {
    match err {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(VERIFIER_TAIL)..].join("\n");
            anyhow!(
                "the kernel refused program `{program}` ({io_error}); the verifier said:\n{tail}"
            )
        }
        other => anyhow::Error::new(other),
    }
}

/// Returns freed heap to the system: glibc keeps it otherwise, and the two
/// BTF parses below would stay in the sensor's resident size for its life.
fn release_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free heap pages.
    unsafe {
        libc::malloc_trim(0);
    }
}

pub fn load(opts: &LoadOptions<'_>) -> Result<Sensor> {
    // aya's loader parses the kernel's BTF when it is created (~15 MiB). The
    // program is a raw tracepoint with no BTF maps and needs none: drop it and
    // give the memory back before our own parse, so the two never add up.
    let mut loader = EbpfLoader::new();
    loader.btf(None);
    release_heap();

    let kernel_btf = btf::Btf::from_file(opts.btf_path)?;
    let offsets = offsets::resolve(&kernel_btf).with_context(|| {
        format!(
            "reading kernel struct offsets from {}",
            opts.btf_path.display()
        )
    })?;
    // Only the offsets were needed from the BTF.
    drop(kernel_btf);
    release_heap();

    let mut ebpf = loader
        .override_global(names::OFFSETS, &offsets, true)
        .override_global(names::CONFIG, &opts.config, true)
        .map_max_entries(names::EVENTS, opts.ring_buffer_bytes)
        .load(OBJECT)
        .context("loading the eBPF object (maps and globals)")?;

    // Descriptors of the maps, for a second look at the verifier's figures.
    let map_fds = map_fds(&ebpf);
    // The stages first, in the program array: the entry may only run once
    // everything it hands over to is in place.
    let mut stages = ProgramArray::try_from(map(&mut ebpf, names::STAGES)?)?;
    let mut verified = Vec::new();
    for (name, index) in stage::ALL {
        let program = load_program(&mut ebpf, name, &mut verified)?;
        let fd = program.fd().with_context(|| format!("program `{name}`"))?;
        stages
            .set(index, fd, 0)
            .with_context(|| format!("installing stage `{name}`"))?;
    }
    load_program(&mut ebpf, names::PROGRAM, &mut verified)?
        .attach(names::TRACEPOINT)
        .with_context(|| format!("attaching to tracepoint {}", names::TRACEPOINT))?;

    if verified.iter().any(|(_, n)| n.is_none()) {
        // Kernels before 5.16 do not report it: ask the verifier itself.
        match verifier::Relocated::new(OBJECT, &map_fds) {
            Ok(relocated) => {
                for (name, n) in &mut verified {
                    match relocated.processed(name) {
                        Ok(count) => *n = Some(count),
                        Err(err) => eprintln!("tinyexec-sensor: warning: {err:#}"),
                    }
                }
            }
            Err(err) => {
                eprintln!("tinyexec-sensor: warning: cannot measure the verifier's work: {err:#}")
            }
        }
    }

    let events = RingBuf::try_from(map(&mut ebpf, names::EVENTS)?)?;
    let lost = PerCpuArray::try_from(map(&mut ebpf, names::LOST)?)?;
    let execs = PerCpuArray::try_from(map(&mut ebpf, names::EXECS)?)?;
    let control = Array::try_from(map(&mut ebpf, names::CONTROL)?)?;
    Ok(Sensor {
        ebpf,
        events,
        lost,
        execs,
        stages,
        control,
        verified,
    })
}

/// Each map's descriptor by name (the maps stay open as long as `ebpf` or
/// the maps taken from it live).
fn map_fds(ebpf: &Ebpf) -> HashMap<String, RawFd> {
    ebpf.maps()
        .filter_map(|(name, map)| {
            let data = match map {
                Map::Array(d) | Map::PerCpuArray(d) | Map::ProgramArray(d) | Map::RingBuf(d) => d,
                _ => return None,
            };
            Some((name.to_owned(), data.fd().as_fd().as_raw_fd()))
        })
        .collect()
}

fn map(ebpf: &mut Ebpf, name: &str) -> Result<Map> {
    ebpf.take_map(name)
        .with_context(|| format!("map `{name}` missing from the eBPF object"))
}

/// Loads (verifies) one program and notes how many instructions the verifier
/// processed for it (reported by kernels from 5.16 on).
fn load_program<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
    verified: &mut Vec<(&'static str, Option<u32>)>,
) -> Result<&'a mut RawTracePoint> {
    let program: &mut RawTracePoint = ebpf
        .program_mut(name)
        .with_context(|| format!("program `{name}` missing from the eBPF object"))?
        .try_into()?;
    program.load().map_err(|err| refused(name, err))?;
    let count = program
        .info()
        .ok()
        .and_then(|info| info.verified_instruction_count());
    verified.push((name, count));
    Ok(program)
}

/// Turns the start-up self-test's "send every exec" switch on or off.
pub fn set_self_test(control: &mut Array<MapData, u32>, on: bool) -> Result<()> {
    control
        .set(control::SELF_TEST, u32::from(on), 0)
        .context("writing the self-test switch")
}

impl Sensor {
    /// `total=T name=n ...`, for the log line before `ready`.
    pub fn verified_summary(&self) -> String {
        let known: Vec<u32> = self.verified.iter().filter_map(|(_, n)| *n).collect();
        let total = if known.len() == self.verified.len() {
            known.iter().sum::<u32>().to_string()
        } else {
            "unknown".to_owned()
        };
        let parts: Vec<String> = self
            .verified
            .iter()
            .map(|(name, n)| match n {
                Some(n) => format!("{name}={n}"),
                None => format!("{name}=unknown"),
            })
            .collect();
        format!(
            "total={total} {} (kernel limit {VERIFIER_LIMIT} per program)",
            parts.join(" ")
        )
    }
}

/// Records the kernel could not reserve since load, summed over CPUs.
pub fn lost_total(lost: &PerCpuArray<MapData, u64>) -> Result<u64> {
    let per_cpu = lost
        .get(&0, 0)
        .context("reading the lost-records counter")?;
    Ok(per_cpu.iter().sum())
}

/// Execs the kernel program saw since load, summed over CPUs.
pub fn execs_total(execs: &PerCpuArray<MapData, u64>) -> Result<u64> {
    let per_cpu = execs.get(&0, 0).context("reading the execs counter")?;
    Ok(per_cpu.iter().sum())
}
