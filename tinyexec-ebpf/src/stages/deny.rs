//! Prevent mode's refusal: a BPF LSM program on `bprm_check_security`,
//! which user space loads with `--prevent` where the kernel runs BPF LSM
//! programs (`kernel/loader.rs`; elsewhere the entry's kill stays the only
//! mechanism).
//!
//! The hook runs before the exec is committed, for every binfmt stage: the
//! file named in exec, then a `#!` script's interpreter or a `binfmt_misc`
//! handler, each with its own first 256 bytes in `bprm->buf`. A match
//! returns `-EPERM`: `execve` fails in its caller, which goes on, and
//! nothing of the file runs. The decision is the entry's, on the same
//! bytes and size (`Fast::candidate`, `judge_header`): an exec it lets
//! through is one the entry would not kill.
//!
//! `current` is still the caller here, and the arguments sit in the new
//! image's memory, which a non-sleepable program cannot read: a refusal's
//! record has the caller's identity and no arguments (`flags::DENIED`).

use core::mem::MaybeUninit;

use aya_ebpf::{
    bindings::{BPF_RB_FORCE_WAKEUP, path},
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_boot_ns,
        generated::{bpf_d_path, bpf_probe_read_kernel},
    },
    macros::{lsm, map},
    maps::PerCpuArray,
    programs::LsmContext,
};
use tinyexec_ebpf::{
    DENY_AREA, DENY_OUT, DENY_PATH_AT, ExecRecord, HEADER_LEN, PATH_MAX, RECORD_FIXED, flags,
    rule::HeaderVerdict,
};

use super::{
    emit::exec_name,
    exec::{Fast, fast_direct, fill_file, fill_task, header_ruled_out_in_place, judge_header},
};
use crate::{
    kernel::{Probed, load, off},
    maps::{EVENTS, count_lost},
};

/// `EPERM`: what the caller's `execve` fails with.
const EPERM: i32 = 1;
/// The most negative errno a hook may return (`MAX_ERRNO`).
const MAX_ERRNO: i32 = 4095;

/// The LSM program's work area, per CPU (see [`DENY_AREA`]), where a
/// refusal's record is assembled. Unlike a tracepoint's, an LSM program runs
/// preemptible (migration off) on a fully preemptible kernel: a refusal on
/// this CPU meanwhile could mix its fields into this record. The decision
/// never reads this area (the header is on the program's stack).
#[map]
static DENY_SCRATCH: PerCpuArray<[u8; DENY_AREA]> = PerCpuArray::with_max_entries(1, 0);

// bprm_check_security(struct linux_binprm *bprm), and the return value of
// the BPF LSM programs before this one as the last argument.
#[lsm(hook = "bprm_check_security")]
#[expect(
    clippy::needless_pass_by_value,
    reason = "aya's program macros hand the context over by value"
)]
pub fn tinyexec_lsm(ctx: LsmContext) -> i32 {
    let bprm: usize = ctx.arg(0);
    let before: i32 = ctx.arg(1);
    // A refusal before ours stands (bounded: the verifier checks the range
    // an LSM program returns).
    if before < 0 {
        return before.max(-MAX_ERRNO);
    }
    if bprm == 0 {
        return 0;
    }
    // The entry's filter: an ordinary exec costs these loads and nothing more.
    let fast = fast_direct(bprm);
    if !fast.candidate() || header_ruled_out_in_place(bprm, fast.size) {
        return 0;
    }
    // The header on this program's own stack: an LSM program can be
    // preempted (on a fully preemptible kernel), and another exec's run on
    // this CPU meanwhile would write over a per-CPU copy before the decision.
    // Words, so the header is 8-aligned (`rule::word` loads words).
    let mut header = MaybeUninit::<[u64; HEADER_LEN / 8]>::uninit();
    // A header that cannot be read is not refused: the entry sees the same
    // failure and flags its record.
    match unsafe { judge_header(header.as_mut_ptr().cast(), bprm, fast.size) } {
        Ok((HeaderVerdict::Match, seen)) => {
            if let Some(work) = DENY_SCRATCH.get_ptr_mut(0) {
                unsafe { report(&ctx, work.cast(), header.as_ptr().cast(), bprm, &fast, seen) };
            } else {
                count_lost();
            }
            -EPERM
        }
        _ => 0,
    }
}

/// Offsets into the record part of the work area, masked for the verifier
/// (records stay below [`DENY_OUT`]).
#[inline(always)]
fn at(base: *mut u8, offset: usize) -> *mut u8 {
    unsafe { base.add(offset & (DENY_OUT - 1)) }
}

/// The refusal's record: who tried, the file, its header, its path, and
/// the name given to exec when an interpreter was the one refused; then into
/// the ring buffer, waking user space.
#[inline(always)]
unsafe fn report(
    ctx: &LsmContext,
    work: *mut u8,
    header: *const u8,
    bprm: usize,
    fast: &Fast,
    seen: usize,
) {
    let rec: *mut ExecRecord = work.cast();
    unsafe {
        if bpf_probe_read_kernel(
            work.add(RECORD_FIXED).cast(),
            HEADER_LEN as u32,
            header.cast(),
        ) != 0
        {
            count_lost();
            return;
        }
        // Every field this record does not fill reads as absent (zero).
        core::ptr::write_bytes(rec, 0, 1);
        let mut fl = flags::DENIED | flags::CANDIDATE | flags::HEADER;
        (*rec).ktime_ns = bpf_ktime_get_boot_ns();
        (*rec).file_size = fast.size;
        (*rec).writers = fast.writers;
        // `seen` through memory the verifier does not follow: the header's
        // automaton leaves it at a different exact value on each way out of
        // its loop, and this record would be verified once for each (150,000
        // instructions more on 6.12).
        core::ptr::write_volatile(&raw mut (*rec).header_len, seen as u32);
        let seen = (core::ptr::read_volatile(&raw const (*rec).header_len) as usize)
            & (2 * HEADER_LEN - 1);
        (*rec).kernel_verdict = HeaderVerdict::Match as u32;
        (*rec).old_pid = bpf_get_current_pid_tgid() as u32;
        (*rec).argc = load::<i32>(bprm, off!(bprm_argc)) as u32;
        let task = bpf_get_current_task() as usize;
        let _ = fill_task(Probed, rec, task, &mut fl);
        fill_file(Probed, rec, fast.inode, &mut fl);
        // A file without links has no path that names it (a memfd, a
        // deleted file): d_path's name for it is a description.
        if fast.nlink == 0 {
            fl |= flags::PATH_DISCONNECTED;
        }
        let mut len = RECORD_FIXED + seen;
        len += file_path(work, len, fast.file, &mut fl);
        (*rec).path_len = (len - RECORD_FIXED - seen) as u32;
        if fast.filename != fast.interp {
            fl |= flags::INTERPRETED;
            len += exec_name(ctx, rec, at(work, len), fast.filename, &mut fl);
        }
        (*rec).flags = fl;
        let out = core::slice::from_raw_parts(work, len & (DENY_OUT - 1));
        if EVENTS
            .output::<[u8]>(out, u64::from(BPF_RB_FORCE_WAKEUP))
            .is_err()
        {
            count_lost();
        }
    }
}

/// The file's path as the caller's root sees it (`bpf_d_path`, which the
/// kernel allows on this hook), copied to `work[offset..]`; returns its
/// length without the NUL (0, flagged truncated, when there is none).
#[inline(always)]
unsafe fn file_path(work: *mut u8, offset: usize, file: usize, fl: &mut u32) -> usize {
    unsafe {
        // `f_path` is a `struct path` in the file, whose first field is `mnt`.
        let f_path = (file + off!(file_path_mnt)) as *mut path;
        let r = bpf_d_path(f_path, work.add(DENY_PATH_AT).cast(), PATH_MAX as u32);
        if r <= 1 || r as usize > PATH_MAX {
            *fl |= flags::PATH_TRUNCATED;
            return 0;
        }
        let n = (r - 1) as usize;
        if n > PATH_MAX {
            return 0;
        }
        let c = bpf_probe_read_kernel(
            at(work, offset).cast(),
            n as u32,
            work.add(DENY_PATH_AT).cast(),
        );
        if c != 0 {
            *fl |= flags::PATH_TRUNCATED;
            return 0;
        }
        n
    }
}
