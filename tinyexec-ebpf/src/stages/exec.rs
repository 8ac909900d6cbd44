//! The entry, attached to `sched_process_exec`: every exec on the machine
//! runs it. It decides whether the exec is worth a record (a rule candidate,
//! an interpreted file, `--all-execs`, the self-test), runs the rule on the
//! header the kernel read (and prevent mode's kill), reads who ran what, and
//! hands over to the path stages.
//!
//! Two builds of the one entry: `tinyexec_exec`, a BTF-typed tracepoint
//! whose fast path reads the kernel's structs with plain loads, and
//! `tinyexec_rawtp`, a raw tracepoint that reads them with helper calls,
//! for kernels that refuse the first (user space loads one, see
//! `kernel/loader.rs`).

use aya_ebpf::{
    EbpfContext,
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns,
        generated::{bpf_probe_read_kernel, bpf_send_signal},
    },
    macros::{btf_tracepoint, raw_tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext},
};
use aya_log_ebpf::debug;
use tinyexec_ebpf::{
    ABSENT, Carry, ExecRecord, HEADER_LEN, RECORD_FIXED, control, flags,
    rule::{self, HeaderVerdict},
    stage,
};

use super::container;
use crate::{
    kernel::{Probed, Reader, Typed, Window, load, off, read_or_flag},
    maps::{CONFIG, CONTROL, EXECS, next_stage, work_and_carry},
    path,
};

// sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)

/// The entry where the kernel takes BTF-typed tracepoint programs: the
/// arguments are typed pointers, so the fast path's fields are plain loads
/// the verifier checks against the kernel's BTF and makes fault-safe (a bad
/// address reads as zero), with no helper call.
#[btf_tracepoint(function = "sched_process_exec")]
#[expect(
    clippy::needless_pass_by_value,
    reason = "aya's program macros hand the context over by value"
)]
pub fn tinyexec_exec(ctx: BtfTracePointContext) -> i32 {
    let task: usize = ctx.arg(0);
    let old_pid: i32 = ctx.arg(1);
    let bprm: usize = ctx.arg(2);
    count_exec();
    // Typed pointers may be null for the verifier: checked before any use.
    if task != 0 && bprm != 0 {
        on_exec(
            &ctx,
            task,
            old_pid as u32,
            bprm,
            fast_direct(bprm),
            header_ruled_out_in_place,
            Typed,
        );
    }
    0
}

/// The entry where the kernel refuses the typed one (see `kernel/loader.rs`):
/// the same program, its fields read with helper calls.
#[raw_tracepoint(tracepoint = "sched_process_exec")]
#[expect(
    clippy::needless_pass_by_value,
    reason = "aya's program macros hand the context over by value"
)]
pub fn tinyexec_rawtp(ctx: RawTracePointContext) -> i32 {
    let task: usize = ctx.arg(0);
    let old_pid: i32 = ctx.arg(1);
    let bprm: usize = ctx.arg(2);
    count_exec();
    // Reading the header in place takes typed loads: here it is copied.
    on_exec(
        &ctx,
        task,
        old_pid as u32,
        bprm,
        fast_probe(bprm),
        |_, _| false,
        Probed,
    );
    0
}

#[inline(always)]
fn count_exec() {
    if let Some(n) = EXECS.get_ptr_mut(0) {
        // Per-CPU slot, and tracepoint programs do not nest on one CPU.
        unsafe { *n += 1 };
    }
}

/// What the filter reads on every exec.
#[derive(Clone, Copy)]
pub(crate) struct Fast {
    /// [`flags::READ_ERROR`] when a read failed.
    pub(crate) fl: u32,
    pub(crate) file: usize,
    pub(crate) inode: usize,
    pub(crate) size: i64,
    pub(crate) nlink: u32,
    pub(crate) writers: i32,
    pub(crate) filename: usize,
    pub(crate) interp: usize,
}

impl Fast {
    /// Whether the rule could match the file: its size can, or it could be
    /// written while it runs (writer count not negative; or unlinked, as
    /// memfds are, whose writable descriptors the count does not see), so
    /// its size now says nothing about the size the kernel read its header
    /// at, and the header is always looked at. The one filter of the entry
    /// and of prevent mode's LSM program.
    #[inline(always)]
    pub(crate) fn candidate(&self) -> bool {
        let writable = self.writers >= 0 || self.nlink == 0;
        self.fl == 0 && self.size >= 0 && (rule::size_can_match(self.size as u64) || writable)
    }
}

/// The size the header is judged for, and how many of its bytes are the
/// file's: a writable file may have been smaller when the kernel read its
/// header, and is decided as for the largest size that can match.
#[inline(always)]
fn judged_size(size: i64) -> (u64, usize) {
    let size = if rule::size_can_match(size as u64) {
        size as u64
    } else {
        rule::FILESIZE_LT - 1
    };
    (size, (size as usize).min(HEADER_LEN))
}

/// Whether the header the kernel read into `bprm->buf` rules the match
/// out, read where it lies with typed loads (see [`load`]): no copy, no
/// work area. What most candidates cost in alerts-only mode.
#[inline(always)]
pub(crate) fn header_ruled_out_in_place(bprm: usize, size: i64) -> bool {
    let (size, seen) = judged_size(size);
    let buf = bprm + off!(bprm_buf);
    rule::ruled_out(|j| load::<u64>(buf, j * 8), seen, size)
}

/// The rule on the header the kernel read into `bprm->buf`, copied to `dst`
/// ([`HEADER_LEN`] bytes of an 8-aligned work area: the automaton indexes
/// by byte, and the verifier refuses loads at a variable offset from the
/// kernel's struct). Returns the verdict and how many bytes of the header
/// are the file's ([`judged_size`]), or the read's error.
#[inline(always)]
pub(crate) unsafe fn judge_header(
    dst: *mut u8,
    bprm: usize,
    size: i64,
) -> Result<(HeaderVerdict, usize), i64> {
    unsafe {
        let r = bpf_probe_read_kernel(
            dst.cast(),
            HEADER_LEN as u32,
            (bprm + off!(bprm_buf)) as *const _,
        );
        if r != 0 {
            return Err(r);
        }
        let (size, seen) = judged_size(size);
        let header: &[u8; HEADER_LEN] = &*dst.cast();
        Ok((rule::header_verdict(header, seen, size), seen))
    }
}

/// The fast path's fields with plain loads (typed pointers: see [`load`]).
#[inline(always)]
pub(crate) fn fast_direct(bprm: usize) -> Fast {
    // A pointer loaded through a typed one is typed too, and never needs a
    // null check: a load through a null one reads zero.
    let file: usize = load(bprm, off!(bprm_file));
    let inode: usize = load(file, off!(file_inode));
    Fast {
        // A file or inode that is not there (never, for an exec that
        // happened): the record says a read failed.
        fl: if inode == 0 { flags::READ_ERROR } else { 0 },
        file,
        inode,
        size: load(inode, off!(inode_size)),
        nlink: load(inode, off!(inode_nlink)),
        writers: load(inode, off!(inode_writecount)),
        filename: load(bprm, off!(bprm_filename)),
        interp: load(bprm, off!(bprm_interp)),
    }
}

/// The fast path's fields with helper calls: fields that sit close together
/// with one call each ([`Window`]).
#[inline(always)]
fn fast_probe(bprm: usize) -> Fast {
    let mut fl = 0u32;
    let b = Window::read(&mut fl, bprm, off!(bprm_window));
    let at_b = |field: usize| field - off!(bprm_window);
    let file: usize = b.get(at_b(off!(bprm_file)));
    let inode: usize = read_or_flag(&mut fl, file, off!(file_inode));
    let i = Window::read(&mut fl, inode, off!(inode_window));
    let at_i = |field: usize| field - off!(inode_window);
    Fast {
        file,
        inode,
        size: i.get(at_i(off!(inode_size))),
        nlink: i.get(at_i(off!(inode_nlink))),
        writers: read_or_flag(&mut fl, inode, off!(inode_writecount)),
        filename: b.get(at_b(off!(bprm_filename))),
        interp: b.get(at_b(off!(bprm_interp))),
        fl,
    }
}

/// Whether the start-up self-test is running (user space sets it for a moment).
#[inline(always)]
fn self_test() -> bool {
    CONTROL.get(control::SELF_TEST).is_some_and(|v| *v != 0)
}

/// `ruled_out_in_place(bprm, size)`: whether the header rules the match out,
/// read without a copy, where the entry can (false where it cannot); `r`:
/// how it reads the record's fields.
///
/// The self-test's canary is a rule candidate whose header the in-place
/// look cannot rule out (`run/selftest/elf.rs`), so the filter passes it on
/// its own wherever the fast path's offsets are right. Where the verifier
/// checked them ([`Reader::OFFSETS_CHECKED`]) the filter skips the
/// self-test's switch, a map value on a cache line of its own that every
/// ordinary exec paid for. Offsets from another BTF (`--btf`, read with
/// helpers) may read the canary wrong: that filter looks at the switch, so
/// that the canary's record comes all the same and the self-test names what
/// was misread.
#[inline(always)]
fn on_exec<C: EbpfContext, R: Reader>(
    ctx: &C,
    task: usize,
    old_pid: u32,
    bprm: usize,
    fast: Fast,
    ruled_out_in_place: impl FnOnce(usize, i64) -> bool,
    r: R,
) {
    // The fast path: every exec pays for it.
    let candidate = fast.candidate();
    let Fast {
        mut fl,
        file,
        inode,
        size,
        nlink: _,
        writers,
        filename,
        interp,
    } = fast;
    // The filter logs nothing, not even a read here that failed: each place
    // tried for that log call cost either two instructions on every ordinary
    // exec or 6,700 more verified instructions on 5.10 and 6.1.
    // An interpreter ran for the file named in exec (a `#!` script, a
    // binfmt_misc handler): that file is not the one that runs, and user
    // space checks it by name.
    let interpreted = filename != interp;
    // Alerts-only mode: an ordinary exec costs these reads and nothing more.
    // A candidate whose header already rules the match out costs only that
    // look (the same decision as `judge_header`'s below, on the same bytes).
    let all_execs = unsafe { core::ptr::read_volatile(&raw const CONFIG.all_execs) } != 0;
    let passes = interpreted
        || all_execs
        || (candidate && !ruled_out_in_place(bprm, size))
        || (!R::OFFSETS_CHECKED && self_test());
    if !passes {
        return;
    }
    let Some((work, carry)) = work_and_carry() else {
        return;
    };
    let rec: *mut ExecRecord = work.cast();
    // Whether user space must see this record at once: an alert to raise, or
    // a 257-269 byte file it must read through /proc before the process exits.
    let mut urgent = false;
    unsafe {
        (*rec).header_len = 0;
        (*rec).kernel_verdict = 0;
        (*rec).self_test_tgid = 0;
        if candidate {
            fl |= flags::CANDIDATE;
            // The header first: prevent mode decides on it before anything else.
            let judged = judge_header(work.add(RECORD_FIXED), bprm, size);
            if let Ok((verdict, seen)) = judged {
                fl |= flags::HEADER;
                (*rec).header_len = seen as u32;
                (*rec).kernel_verdict = verdict as u32;
                match verdict {
                    HeaderVerdict::Match => {
                        urgent = true;
                        // Where the LSM program refuses matches, none gets
                        // here (the same bytes and size): the kill stays
                        // armed behind it all the same.
                        if core::ptr::read_volatile(&raw const CONFIG.prevent) != 0 {
                            fl |= kill(ctx);
                        }
                    }
                    HeaderVerdict::NeedRest => urgent = true,
                    HeaderVerdict::NoMatch => {}
                }
            } else {
                debug!(
                    ctx,
                    "pid {}: reading the file's header failed ({})",
                    current_pid(),
                    judged.err().unwrap_or_default()
                );
                fl |= flags::READ_ERROR;
                urgent = true;
            }
        }
        if self_test() {
            // User space waits for the canary's record: wake it.
            fl |= flags::SELF_TEST;
            urgent = true;
            (*rec).self_test_tgid = current_pid();
        } else if !all_execs && !urgent && !interpreted {
            // Alerts-only mode: a small file whose header already rules the
            // match out costs the header check and nothing more.
            return;
        }
        (*rec).ktime_ns = bpf_ktime_get_boot_ns();
        (*rec).file_size = size;
        (*rec).writers = writers;
        (*rec).old_pid = old_pid;
        if interpreted {
            fl |= flags::INTERPRETED;
        }
        let (parent, cred) = fill_task(r, rec, task, &mut fl);
        fill_file(r, rec, inode, &mut fl);
        // The stages' pointers are read here, not there: this program can
        // read them with typed loads, a tail-called stage only with helper
        // calls. The stages do what needs helpers (names, variable offsets).
        container::namespaces(r, rec, task, cred, &mut fl);
        let (pid, pid_level) = container::pid_of(r, &mut fl, task);
        let (parent_pid, parent_pid_level) = container::pid_of(r, &mut fl, parent);
        let cgroup_kn = container::cgroup_node(r, rec, task, &mut fl);
        let exe = path::start(r, &mut fl, file);
        // The parent's executable (`mm->exe_file`); none for a kernel thread.
        let parent_mm: usize = r.get(&mut fl, parent, off!(task_mm));
        let parent_file: usize = if parent_mm == 0 {
            0
        } else {
            r.get(&mut fl, parent_mm, off!(mm_exe_file))
        };
        let parent_exe = path::start(r, &mut fl, parent_file);
        // The arguments: their count, and where the new image holds them.
        let argc: i32 = r.get(&mut fl, bprm, off!(bprm_argc));
        (*rec).argc = argc as u32;
        let mm: usize = r.get(&mut fl, task, off!(task_mm));
        let (args_start, args_end): (u64, u64) = if mm == 0 {
            (0, 0)
        } else {
            (
                r.get(&mut fl, mm, off!(mm_arg_start)),
                r.get(&mut fl, mm, off!(mm_arg_end)),
            )
        };
        (*rec).flags = fl;
        *carry = Carry {
            args_start,
            args_end,
            exec_name: if interpreted { filename as u64 } else { 0 },
            walks: [exe, parent_exe],
            pid: pid as u64,
            parent_pid: parent_pid as u64,
            pid_level,
            parent_pid_level,
            cgroup_kn: cgroup_kn as u64,
            urgent: u32::from(urgent),
            walk_pos: 0,
            walk_flags: 0,
            _pad: 0,
        };
    }
    next_stage::<{ stage::EXE_PATH }>(ctx);
}

/// The exec'ing process, as the kernel's helper names it (for log lines).
#[inline(always)]
fn current_pid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}

/// Prevent mode, on a match: SIGKILL before the new image returns to user
/// space. Returns `KILLED`, or `KILL_FAILED` when no signal could be sent.
#[inline(always)]
fn kill<C: EbpfContext>(ctx: &C) -> u32 {
    // Not in aya_ebpf::bindings (they hold BPF's own constants only).
    const SIGKILL: u32 = 9;
    // -EBUSY (or any error) means no signal was sent: say so.
    let r = unsafe { bpf_send_signal(SIGKILL) };
    if r == 0 {
        flags::KILLED
    } else {
        debug!(
            ctx,
            "pid {}: prevent: sending SIGKILL failed ({})",
            current_pid(),
            r
        );
        flags::KILL_FAILED
    }
}

/// Identity of the new process and its parent; returns the parent process
/// (the real parent's group leader) and the task's cred.
#[inline(always)]
pub(crate) unsafe fn fill_task<R: Reader>(
    r: R,
    rec: *mut ExecRecord,
    task: usize,
    fl: &mut u32,
) -> (usize, usize) {
    unsafe {
        (*rec).pid = r.get(fl, task, off!(task_tgid));
        r.bytes16(fl, &raw mut (*rec).comm, task, off!(task_comm));
        // The parent process: the group leader of the thread that forked us,
        // so its name is the process's, not a thread's.
        let parent: usize = r.get(fl, task, off!(task_real_parent));
        let parent: usize = r.get(fl, parent, off!(task_group_leader));
        (*rec).ppid = r.get(fl, parent, off!(task_tgid));
        r.bytes16(fl, &raw mut (*rec).parent_comm, parent, off!(task_comm));
        let cred: usize = r.get(fl, task, off!(task_cred));
        (*rec).uid = r.get(fl, cred, off!(cred_uid));
        (*rec).gid = r.get(fl, cred, off!(cred_gid));
        (*rec).euid = r.get(fl, cred, off!(cred_euid));
        (*rec).egid = r.get(fl, cred, off!(cred_egid));
        (*rec).loginuid = if off!(task_loginuid) == ABSENT as usize {
            u32::MAX
        } else {
            r.get(fl, task, off!(task_loginuid))
        };
        (parent, cred)
    }
}

/// Identity of the executed file.
#[inline(always)]
pub(crate) unsafe fn fill_file<R: Reader>(r: R, rec: *mut ExecRecord, inode: usize, fl: &mut u32) {
    unsafe {
        (*rec).ino = r.get(fl, inode, off!(inode_ino));
        (*rec).nlink = r.get(fl, inode, off!(inode_nlink));
        let mode: u16 = r.get(fl, inode, off!(inode_mode));
        (*rec).mode = u32::from(mode);
        let sb: usize = r.get(fl, inode, off!(inode_sb));
        (*rec).dev = r.get(fl, sb, off!(sb_dev));
        (*rec).ctime_sec = r.get(fl, inode, off!(inode_ctime_sec));
        (*rec).ctime_nsec = r.get(fl, inode, off!(inode_ctime_nsec));
    }
}
