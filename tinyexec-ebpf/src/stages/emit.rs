//! The last stage: the arguments, the paths the earlier stages built, the
//! name given to exec and the cgroup path, then one copy of the bytes used
//! into the ring buffer.

use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::generated::{bpf_probe_read_kernel, bpf_probe_read_kernel_str, bpf_probe_read_user},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use aya_log_ebpf::debug;
use tinyexec_ebpf::{
    ARGS_MAX, CGROUP_PATH_MAX, CGROUP_SCRATCH, Carry, EXEC_PATH_MAX, ExecRecord, OUT_AREA,
    PATH_BUF, PATH_MAX, PATH_SCRATCH, RECORD_FIXED, flags,
};

use crate::maps::{EVENTS, count_lost, work_and_carry};

#[raw_tracepoint(tracepoint = "sched_process_exec")]
#[expect(
    clippy::needless_pass_by_value,
    reason = "aya's program macros hand the context over by value"
)]
pub fn tinyexec_emit(ctx: RawTracePointContext) -> i32 {
    if let Some((work, carry)) = work_and_carry() {
        unsafe { emit(&ctx, work, &*carry) };
    }
    0
}

/// Offsets into the work area, masked so the verifier can bound every copy;
/// the masks never change a real value (records stay below `OUT_AREA`).
#[inline(always)]
fn at(base: *mut u8, offset: usize) -> *mut u8 {
    unsafe { base.add(offset & (OUT_AREA - 1)) }
}

/// The arguments, the paths, and one copy of the bytes used into the ring
/// buffer. Each failure is logged where it happens, on a branch the program
/// takes anyway: a test of the flags at the end would cost the verifier
/// 50,000 instructions more when the log is on.
#[inline(always)]
unsafe fn emit(ctx: &RawTracePointContext, work: *mut u8, carry: &Carry) {
    let rec: *mut ExecRecord = work.cast();
    unsafe {
        let mut fl = core::ptr::read_volatile(&raw const (*rec).flags);
        let mut len = RECORD_FIXED + stored(&raw const (*rec).header_len);
        fill_args(ctx, rec, at(work, len), carry, &mut fl);
        len += stored(&raw const (*rec).args_len);
        len += copy_path(
            ctx,
            work,
            len,
            work.add(PATH_SCRATCH).cast(),
            stored(&raw const (*rec).path_len),
            &mut fl,
        );
        len += copy_path(
            ctx,
            work,
            len,
            work.add(PATH_SCRATCH + PATH_BUF).cast(),
            stored(&raw const (*rec).parent_path_len),
            &mut (*rec).parent_path_flags,
        );
        (*rec).exec_path_len = 0;
        if carry.exec_name != 0 {
            len += exec_name(ctx, rec, at(work, len), carry.exec_name as usize, &mut fl);
        }
        len += copy_cgroup_path(ctx, rec, at(work, len), work.add(CGROUP_SCRATCH), &mut fl);
        (*rec).flags = fl;
        // One copy of the bytes used; the bound is for the verifier.
        let out = core::slice::from_raw_parts(work, len & (OUT_AREA - 1));
        if let Err(err) = EVENTS.output::<[u8]>(out, wakeup(carry.urgent != 0)) {
            debug!(
                ctx,
                "pid {}: no room in the ring buffer ({}): its record of {} bytes is lost",
                (*rec).pid,
                err,
                len as u32
            );
            count_lost();
        }
    }
}

/// When to wake the reader. Waking costs the kernel more than the rest of
/// the record (an interrupt and a scheduler wake-up, ~24 us per exec here),
/// so only urgent records (alerts wait for nobody) wake it at once; others
/// are batched until `BATCH_BYTES` are pending, and user space also drains
/// the ring on its 200 ms tick. Urgent records force the wake-up: the
/// adaptive one (flags 0) wakes nobody while earlier records sit unread,
/// which `--all-execs` leaves there on purpose.
#[inline(always)]
fn wakeup(urgent: bool) -> u64 {
    const BPF_RB_AVAIL_DATA: u64 = 0;
    const BATCH_BYTES: u64 = 64 << 10;
    if urgent || EVENTS.query(BPF_RB_AVAIL_DATA) >= BATCH_BYTES {
        u64::from(BPF_RB_FORCE_WAKEUP)
    } else {
        u64::from(BPF_RB_NO_WAKEUP)
    }
}

/// A length the record holds, re-read from memory and bounded for the verifier.
#[inline(always)]
unsafe fn stored(field: *const u32) -> usize {
    (unsafe { core::ptr::read_volatile(field) } as usize) & (2 * PATH_MAX - 1)
}

/// Copies the last `n` bytes of a path built in `scratch` to `work[offset..]`.
/// Returns the bytes copied (0, with the path flagged truncated, on failure).
#[inline(always)]
unsafe fn copy_path(
    ctx: &RawTracePointContext,
    work: *mut u8,
    offset: usize,
    scratch: *mut [u8; PATH_BUF],
    n: usize,
    fl: &mut u32,
) -> usize {
    if n == 0 || n > PATH_MAX {
        return 0;
    }
    let r = unsafe {
        bpf_probe_read_kernel(
            at(work, offset).cast(),
            n as u32,
            scratch.cast::<u8>().add(PATH_MAX - n).cast(),
        )
    };
    if r == 0 {
        n
    } else {
        debug!(
            ctx,
            "copying a path of {} bytes out of the work area failed ({})", n as u32, r
        );
        *fl |= flags::PATH_TRUNCATED;
        0
    }
}

/// Copies the cgroup path the container stage wrote to `dst`; returns its
/// length (0, with the path flagged truncated, when the copy fails).
#[inline(always)]
unsafe fn copy_cgroup_path(
    ctx: &RawTracePointContext,
    rec: *mut ExecRecord,
    dst: *mut u8,
    scratch: *const u8,
    fl: &mut u32,
) -> usize {
    let n = unsafe { core::ptr::read_volatile(&raw const (*rec).cgroup_path_len) } as usize;
    if n == 0 || n > CGROUP_PATH_MAX {
        unsafe { (*rec).cgroup_path_len = 0 };
        return 0;
    }
    let r = unsafe {
        bpf_probe_read_kernel(
            dst.cast(),
            (n & (2 * CGROUP_PATH_MAX - 1)) as u32,
            scratch.cast(),
        )
    };
    if r != 0 {
        debug!(
            ctx,
            "copying a cgroup path of {} bytes out of the work area failed ({})", n as u32, r
        );
        *fl |= flags::CGROUP_PATH_TRUNCATED;
        unsafe { (*rec).cgroup_path_len = 0 };
        return 0;
    }
    n
}

/// Copies the name given to exec (a kernel string) to `dst`; returns its
/// length without the NUL, also noted in `exec_path_len`. Prevent mode's
/// refusal (`deny.rs`) records it the same way.
#[inline(always)]
pub(super) unsafe fn exec_name<C: EbpfContext>(
    ctx: &C,
    rec: *mut ExecRecord,
    dst: *mut u8,
    name: usize,
    fl: &mut u32,
) -> usize {
    let r =
        unsafe { bpf_probe_read_kernel_str(dst.cast(), EXEC_PATH_MAX as u32, name as *const _) };
    if r <= 0 {
        debug!(
            ctx,
            "pid {}: reading the name given to exec failed ({})",
            unsafe { (*rec).pid },
            r
        );
        *fl |= flags::READ_ERROR;
        return 0;
    }
    // With its NUL; a name that filled the buffer was cut.
    let n = (r as usize - 1) & (EXEC_PATH_MAX - 1);
    if r as usize >= EXEC_PATH_MAX {
        debug!(
            ctx,
            "pid {}: the name given to exec was cut short at {} bytes",
            unsafe { (*rec).pid },
            n as u32
        );
        *fl |= flags::EXEC_PATH_TRUNCATED;
    }
    unsafe { (*rec).exec_path_len = n as u32 };
    n
}

/// The argument vector, as the kernel copied it onto the new image's stack,
/// into `dst`; its length goes to `args_len`.
#[inline(always)]
unsafe fn fill_args(
    ctx: &RawTracePointContext,
    rec: *mut ExecRecord,
    dst: *mut u8,
    carry: &Carry,
    fl: &mut u32,
) {
    unsafe {
        (*rec).args_len = 0;
        let (start, end) = (carry.args_start, carry.args_end);
        // A new image always has its arguments somewhere: 0 is a failed read.
        if start == 0 {
            debug!(
                ctx,
                "pid {}: reading where its arguments are failed",
                (*rec).pid
            );
            *fl |= flags::ARGS_UNREADABLE;
            return;
        }
        let mut len = end.wrapping_sub(start);
        if len > ARGS_MAX as u64 {
            len = ARGS_MAX as u64;
            *fl |= flags::ARGS_TRUNCATED;
        }
        let r = bpf_probe_read_user(
            dst.cast(),
            (len as u32) & (2 * ARGS_MAX as u32 - 1),
            start as *const _,
        );
        if r != 0 {
            debug!(
                ctx,
                "pid {}: reading its {} bytes of arguments failed ({})",
                (*rec).pid,
                len,
                r
            );
            *fl |= flags::ARGS_UNREADABLE;
            return;
        }
        (*rec).args_len = len as u32;
    }
}
