//! Loading and attaching the kernel programs.

use std::path::Path;

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{ProgramError, RawTracePoint},
};
use tinyexec_ebpf::{Config, names};

use crate::{btf, offsets};

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
}

/// How many verifier lines an error shows: the cause is at the end.
const VERIFIER_TAIL: usize = 30;

fn refused(err: ProgramError) -> anyhow::Error {
    match err {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(VERIFIER_TAIL)..].join("\n");
            anyhow!(
                "the kernel refused program `{}` ({io_error}); the verifier said:\n{tail}",
                names::PROGRAM
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

    let program: &mut RawTracePoint = ebpf
        .program_mut(names::PROGRAM)
        .context("program missing from the eBPF object")?
        .try_into()?;
    program.load().map_err(refused)?;
    program
        .attach(names::TRACEPOINT)
        .with_context(|| format!("attaching to tracepoint {}", names::TRACEPOINT))?;

    let events = RingBuf::try_from(ebpf.take_map(names::EVENTS).context("EVENTS map missing")?)?;
    let lost = PerCpuArray::try_from(ebpf.take_map(names::LOST).context("LOST map missing")?)?;
    Ok(Sensor { ebpf, events, lost })
}

/// Records the kernel could not reserve since load, summed over CPUs.
pub fn lost_total(lost: &PerCpuArray<MapData, u64>) -> Result<u64> {
    let per_cpu = lost
        .get(&0, 0)
        .context("reading the lost-records counter")?;
    Ok(per_cpu.iter().sum())
}
