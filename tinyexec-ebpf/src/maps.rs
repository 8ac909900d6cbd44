//! The maps and read-only globals every stage shares, and the helpers that
//! hand one exec from stage to stage.

use aya_ebpf::{
    EbpfContext,
    macros::map,
    maps::{Array, PerCpuArray, ProgramArray, RingBuf},
};
use aya_log_ebpf::debug;
use tinyexec_ebpf::{CARRY_AT, Carry, Config, Offsets, SCRATCH_LEN, cgroup_mode, control, stage};

/// Exec records to user space. User space sets the size at load time.
#[map]
pub(crate) static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

/// Records that could not be queued (ring buffer full, or a stage
/// missing), per CPU.
#[map]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Execs this program saw, every one in every mode, per CPU: the heartbeat's
/// `execs_seen`, against which records read and lost add up.
#[map]
pub(crate) static EXECS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Where each record is assembled before it is copied, at its real length,
/// into the ring buffer. Per CPU: tracepoint programs do not nest on a CPU,
/// and the stages of one exec run on the CPU that started it.
#[map]
static SCRATCH: PerCpuArray<[u8; SCRATCH_LEN]> = PerCpuArray::with_max_entries(1, 0);

/// The stages, filled in by user space before the entry is attached.
#[map]
static STAGES: ProgramArray = ProgramArray::with_max_entries(stage::ALL.len() as u32, 0);

/// Switches user space flips at run time ([`control`]).
#[map]
pub(crate) static CONTROL: Array<u32> = Array::with_max_entries(control::LEN, 0);

/// Kernel struct field offsets, from BTF at load time.
#[unsafe(no_mangle)]
pub(crate) static OFFSETS: Offsets = unsafe { core::mem::zeroed() };

/// Behaviour switches, set at load time.
#[unsafe(no_mangle)]
pub(crate) static CONFIG: Config = Config {
    all_execs: 0,
    max_path_depth: tinyexec_ebpf::DEFAULT_PATH_DEPTH,
    prevent: 0,
    cgroup_mode: cgroup_mode::NONE,
    cgroup_subsys: 0,
};

/// This CPU's work area and the [`Carry`] inside it.
#[inline(always)]
pub(crate) fn work_and_carry() -> Option<(*mut u8, *mut Carry)> {
    let work: *mut u8 = SCRATCH.get_ptr_mut(0)?.cast();
    Some((work, unsafe { work.add(CARRY_AT).cast() }))
}

/// Hands over to stage `INDEX`; returning from the tail call means the
/// stage is missing, and the record is lost: count it. A const parameter, so
/// each stage has a copy of its own: one log call shared by several stages
/// would be compiled as a function they call (BPF-to-BPF calls mix with tail
/// calls only on some kernels and architectures).
#[inline(always)]
pub(crate) fn next_stage<const INDEX: u32>(ctx: &impl EbpfContext) {
    unsafe { STAGES.tail_call(ctx, INDEX) };
    debug!(
        ctx,
        "the tail call to stage {} failed: the record is lost", INDEX
    );
    count_lost();
}

#[inline(always)]
pub(crate) fn count_lost() {
    if let Some(lost) = LOST.get_ptr_mut(0) {
        // Per-CPU slot and tracepoint programs do not nest on one CPU: no atomic needed.
        unsafe { *lost += 1 };
    }
}
