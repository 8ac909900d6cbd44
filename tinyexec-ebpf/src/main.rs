//! tinyexec's kernel programs: a raw tracepoint on `sched_process_exec` and
//! the stages it tail-calls.
//!
//! The tracepoint fires once per successful execve/execveat, after the new
//! image is committed and before it runs its first instruction, so what we read
//! here is what really runs. Kernel struct offsets come from the running
//! kernel's BTF, handed over by user space in the read-only global `OFFSETS`.
//!
//! The work is split into programs the verifier checks one by one (see
//! `tinyexec_ebpf::stage`): what one path walk does is then verified once, not
//! once for every way the walk before it can end.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
#![cfg_attr(
    target_arch = "bpf",
    expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "the kernel side bounds its values with the masks and comparisons the verifier \
                  follows; a try_from is one more branch for it, and a pointer is a u64 here"
    )
)]
#![cfg_attr(
    target_arch = "bpf",
    expect(
        clippy::inline_always,
        reason = "eBPF code: each helper is inlined into its program (BPF-to-BPF calls mix with tail calls only from kernel 5.10 on)"
    )
)]

#[cfg(target_arch = "bpf")]
mod container;
#[cfg(target_arch = "bpf")]
mod kernel;
#[cfg(target_arch = "bpf")]
mod path;

#[cfg(target_arch = "bpf")]
mod program {
    use aya_ebpf::{
        bindings::{BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
        helpers::{
            bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns,
            generated::{
                bpf_probe_read_kernel, bpf_probe_read_kernel_str, bpf_probe_read_user,
                bpf_send_signal,
            },
        },
        macros::{map, raw_tracepoint},
        maps::{Array, PerCpuArray, ProgramArray, RingBuf},
        programs::RawTracePointContext,
    };
    use tinyexec_ebpf::{
        ABSENT, ARGS_MAX, CARRY_AT, CGROUP_PATH_MAX, CGROUP_SCRATCH, COMM_LEN, Carry, Config,
        EXEC_PATH_MAX, ExecRecord, HEADER_LEN, OUT_AREA, Offsets, PATH_BUF, PATH_MAX, PATH_SCRATCH,
        RECORD_FIXED, SCRATCH_LEN, cgroup_mode, control, flags,
        rule::{self, HeaderVerdict},
        stage,
    };

    use crate::{
        container,
        kernel::{Window, off, read, read_or_flag},
        path,
    };

    /// Exec records to user space. User space sets the size at load time.
    #[map]
    static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

    /// Records that could not be queued (ring buffer full, or a stage
    /// missing), per CPU.
    #[map]
    static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

    /// Execs this program saw, every one in every mode, per CPU: the heartbeat's
    /// `execs_seen`, against which records read and lost add up.
    #[map]
    static EXECS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

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
    static CONTROL: Array<u32> = Array::with_max_entries(control::LEN, 0);

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

    // A raw tracepoint rather than tp_btf: the same arguments and cost, and
    // loading it needs no BTF of our own in user space (a 30 MiB parse).
    #[raw_tracepoint(tracepoint = "sched_process_exec")]
    #[expect(
        clippy::needless_pass_by_value,
        reason = "aya's program macros hand the context over by value"
    )]
    pub fn tinyexec_exec(ctx: RawTracePointContext) -> i32 {
        // sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
        let task: usize = ctx.arg(0);
        let old_pid: i32 = ctx.arg(1);
        let bprm: usize = ctx.arg(2);
        if let Some(n) = EXECS.get_ptr_mut(0) {
            // Per-CPU slot, and tracepoint programs do not nest on one CPU.
            unsafe { *n += 1 };
        }
        on_exec(&ctx, task, old_pid as u32, bprm);
        0
    }

    #[raw_tracepoint(tracepoint = "sched_process_exec")]
    #[expect(
        clippy::needless_pass_by_value,
        reason = "aya's program macros hand the context over by value"
    )]
    pub fn tinyexec_exe_path(ctx: RawTracePointContext) -> i32 {
        if let Some((work, carry)) = work_and_carry() {
            let file = unsafe { (*carry).file } as usize;
            unsafe { walk_into(work, carry, 0, Some(file)) };
        }
        next_stage(&ctx, stage::PARENT_PATH);
        0
    }

    #[raw_tracepoint(tracepoint = "sched_process_exec")]
    #[expect(
        clippy::needless_pass_by_value,
        reason = "aya's program macros hand the context over by value"
    )]
    pub fn tinyexec_parent_path(ctx: RawTracePointContext) -> i32 {
        if let Some((work, carry)) = work_and_carry() {
            let parent = unsafe { (*carry).parent } as usize;
            unsafe { walk_into(work, carry, 1, parent_exe(parent)) };
        }
        next_stage(&ctx, stage::CONTAINER);
        0
    }

    #[raw_tracepoint(tracepoint = "sched_process_exec")]
    #[expect(
        clippy::needless_pass_by_value,
        reason = "aya's program macros hand the context over by value"
    )]
    pub fn tinyexec_container(ctx: RawTracePointContext) -> i32 {
        if let Some((work, carry)) = work_and_carry() {
            unsafe { container::fill(work.cast(), work.add(CGROUP_SCRATCH), &*carry) };
        }
        next_stage(&ctx, stage::EMIT);
        0
    }

    #[raw_tracepoint(tracepoint = "sched_process_exec")]
    pub fn tinyexec_emit(_ctx: RawTracePointContext) -> i32 {
        if let Some((work, carry)) = work_and_carry() {
            unsafe { emit(work, &*carry) };
        }
        0
    }

    /// Offsets into the work area, masked so the verifier can bound every copy;
    /// the masks never change a real value (records stay below `OUT_AREA`).
    #[inline(always)]
    fn at(base: *mut u8, offset: usize) -> *mut u8 {
        unsafe { base.add(offset & (OUT_AREA - 1)) }
    }

    #[inline(always)]
    fn work_and_carry() -> Option<(*mut u8, *mut Carry)> {
        let work: *mut u8 = SCRATCH.get_ptr_mut(0)?.cast();
        Some((work, unsafe { work.add(CARRY_AT).cast() }))
    }

    /// Hands over to the next stage; returning from the tail call means the
    /// stage is missing, and the record is lost: count it.
    #[inline(always)]
    fn next_stage(ctx: &RawTracePointContext, index: u32) {
        unsafe { STAGES.tail_call(ctx, index) };
        count_lost();
    }

    #[inline(always)]
    fn count_lost() {
        if let Some(lost) = LOST.get_ptr_mut(0) {
            // Per-CPU slot and tracepoint programs do not nest on one CPU: no atomic needed.
            unsafe { *lost += 1 };
        }
    }

    /// Whether the start-up self-test is running (user space sets it for a moment).
    #[inline(always)]
    fn self_test() -> bool {
        CONTROL.get(control::SELF_TEST).is_some_and(|v| *v != 0)
    }

    #[inline(always)]
    fn on_exec(ctx: &RawTracePointContext, task: usize, old_pid: u32, bprm: usize) {
        let mut fl = 0u32;
        // The fast path: every exec pays for it. Fields that sit close together
        // are read with one helper call each ([`WINDOW`] bytes).
        let b = Window::read(&mut fl, bprm, off!(bprm_window));
        let at_b = |field: usize| field - off!(bprm_window);
        let file: usize = b.get(at_b(off!(bprm_file)));
        let inode: usize = read_or_flag(&mut fl, file, off!(file_inode));
        let i = Window::read(&mut fl, inode, off!(inode_window));
        let at_i = |field: usize| field - off!(inode_window);
        let size: i64 = i.get(at_i(off!(inode_size)));
        let nlink: u32 = i.get(at_i(off!(inode_nlink)));
        let writers: i32 = read_or_flag(&mut fl, inode, off!(inode_writecount));
        // A file that could be written while it runs (writer count not
        // negative; or unlinked, as memfds are, whose writable descriptors the
        // count does not see): its size now says nothing about the size the
        // kernel read its header at, so the header is always looked at.
        let writable = writers >= 0 || nlink == 0;
        let candidate = fl == 0 && size >= 0 && (rule::size_can_match(size as u64) || writable);
        // An interpreter ran for the file named in exec (a `#!` script, a
        // binfmt_misc handler): that file is not the one that runs, and user
        // space checks it by name.
        let filename: usize = b.get(at_b(off!(bprm_filename)));
        let interp: usize = b.get(at_b(off!(bprm_interp)));
        let interpreted = filename != interp;
        // Alerts-only mode: an ordinary exec costs these reads and nothing more.
        // The self-test's switch is looked at too (an inlined array lookup):
        // with offsets from a BTF that does not fit the kernel the canary may
        // not look like a candidate, and its record must come all the same.
        let all_execs = unsafe { core::ptr::read_volatile(&raw const CONFIG.all_execs) } != 0;
        if !candidate && !interpreted && !all_execs && !self_test() {
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
                let r = bpf_probe_read_kernel(
                    work.add(RECORD_FIXED).cast(),
                    HEADER_LEN as u32,
                    (bprm + off!(bprm_buf)) as *const _,
                );
                if r == 0 {
                    fl |= flags::HEADER;
                    // A writable file may have been smaller when the kernel read
                    // its header: decide as for the largest size that can match.
                    let size = if rule::size_can_match(size as u64) {
                        size as u64
                    } else {
                        rule::FILESIZE_LT - 1
                    };
                    let seen = (size as usize).min(HEADER_LEN);
                    (*rec).header_len = seen as u32;
                    let header: &[u8; HEADER_LEN] = &*work.add(RECORD_FIXED).cast();
                    let verdict = rule::header_verdict(header, seen, size);
                    (*rec).kernel_verdict = verdict as u32;
                    match verdict {
                        HeaderVerdict::Match => {
                            urgent = true;
                            if core::ptr::read_volatile(&raw const CONFIG.prevent) != 0 {
                                fl |= kill();
                            }
                        }
                        HeaderVerdict::NeedRest => urgent = true,
                        HeaderVerdict::NoMatch => {}
                    }
                } else {
                    fl |= flags::READ_ERROR;
                    urgent = true;
                }
            }
            if self_test() {
                // User space waits for the canary's record: wake it.
                fl |= flags::SELF_TEST;
                urgent = true;
                (*rec).self_test_tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
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
            let (parent, cred) = fill_task(rec, task, &mut fl);
            fill_file(rec, inode, &mut fl);
            (*rec).flags = fl;
            *carry = Carry {
                task: task as u64,
                file: file as u64,
                bprm: bprm as u64,
                exec_name: if interpreted { filename as u64 } else { 0 },
                parent: parent as u64,
                cred: cred as u64,
                urgent: u32::from(urgent),
                walk_pos: 0,
                walk_flags: 0,
                _pad: 0,
            };
        }
        next_stage(ctx, stage::EXE_PATH);
    }

    /// Walks `file`'s path into path scratch slot `which` (0: the executed
    /// file, 1: the parent's executable) and notes its length and flags.
    #[inline(always)]
    unsafe fn walk_into(work: *mut u8, carry: *mut Carry, which: usize, file: Option<usize>) {
        let rec: *mut ExecRecord = work.cast();
        let buf: *mut [u8; PATH_BUF] = unsafe { work.add(PATH_SCRATCH + which * PATH_BUF).cast() };
        let (start, path_flags) = match file {
            Some(file) => unsafe { path::walk(buf, carry, file) },
            None => (PATH_MAX as u32, 0),
        };
        let len = PATH_MAX as u32 - start.min(PATH_MAX as u32);
        unsafe {
            if which == 0 {
                (*rec).path_len = len;
                (*rec).flags |= path_flags;
            } else {
                (*rec).parent_path_len = len;
                (*rec).parent_path_flags = path_flags;
            }
        }
    }

    /// The last stage: the arguments, the paths, and one copy of the bytes
    /// used into the ring buffer.
    #[inline(always)]
    unsafe fn emit(work: *mut u8, carry: &Carry) {
        let rec: *mut ExecRecord = work.cast();
        unsafe {
            let mut fl = core::ptr::read_volatile(&raw const (*rec).flags);
            let mut len = RECORD_FIXED + stored(&raw const (*rec).header_len);
            fill_args(
                rec,
                at(work, len),
                carry.task as usize,
                carry.bprm as usize,
                &mut fl,
            );
            len += stored(&raw const (*rec).args_len);
            len += copy_path(
                work,
                len,
                work.add(PATH_SCRATCH).cast(),
                stored(&raw const (*rec).path_len),
                &mut fl,
            );
            len += copy_path(
                work,
                len,
                work.add(PATH_SCRATCH + PATH_BUF).cast(),
                stored(&raw const (*rec).parent_path_len),
                &mut (*rec).parent_path_flags,
            );
            (*rec).exec_path_len = 0;
            if carry.exec_name != 0 {
                len += exec_name(rec, at(work, len), carry.exec_name as usize, &mut fl);
            }
            len += copy_cgroup_path(rec, at(work, len), work.add(CGROUP_SCRATCH), &mut fl);
            (*rec).flags = fl;
            // One copy of the bytes used; the bound is for the verifier.
            let out = core::slice::from_raw_parts(work, len & (OUT_AREA - 1));
            if EVENTS
                .output::<[u8]>(out, wakeup(carry.urgent != 0))
                .is_err()
            {
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
            *fl |= flags::PATH_TRUNCATED;
            0
        }
    }

    /// Copies the cgroup path the container stage wrote to `dst`; returns its
    /// length (0, with the path flagged truncated, when the copy fails).
    #[inline(always)]
    unsafe fn copy_cgroup_path(
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
            *fl |= flags::CGROUP_PATH_TRUNCATED;
            unsafe { (*rec).cgroup_path_len = 0 };
            return 0;
        }
        n
    }

    /// Copies the name given to exec (a kernel string) to `dst`; returns its
    /// length without the NUL, also noted in `exec_path_len`.
    #[inline(always)]
    unsafe fn exec_name(rec: *mut ExecRecord, dst: *mut u8, name: usize, fl: &mut u32) -> usize {
        let r = unsafe {
            bpf_probe_read_kernel_str(dst.cast(), EXEC_PATH_MAX as u32, name as *const _)
        };
        if r <= 0 {
            *fl |= flags::READ_ERROR;
            return 0;
        }
        // With its NUL; a name that filled the buffer was cut.
        let n = (r as usize - 1) & (EXEC_PATH_MAX - 1);
        if r as usize >= EXEC_PATH_MAX {
            *fl |= flags::EXEC_PATH_TRUNCATED;
        }
        unsafe { (*rec).exec_path_len = n as u32 };
        n
    }

    /// Prevent mode, on a match: SIGKILL before the new image returns to user
    /// space. Returns `KILLED`, or `KILL_FAILED` when no signal could be sent.
    #[inline(always)]
    fn kill() -> u32 {
        // Not in aya_ebpf::bindings (they hold BPF's own constants only).
        const SIGKILL: u32 = 9;
        // -EBUSY (or any error) means no signal was sent: say so.
        if unsafe { bpf_send_signal(SIGKILL) } == 0 {
            flags::KILLED
        } else {
            flags::KILL_FAILED
        }
    }

    /// The parent process's executable file (`mm->exe_file`); None for kernel threads.
    #[inline(always)]
    fn parent_exe(parent: usize) -> Option<usize> {
        let mm: usize = read(parent, off!(task_mm)).ok()?;
        if mm == 0 {
            return None;
        }
        let file: usize = read(mm, off!(mm_exe_file)).ok()?;
        (file != 0).then_some(file)
    }

    /// Identity of the new process and its parent; returns the parent process
    /// (the real parent's group leader) and the task's cred for later stages.
    #[inline(always)]
    unsafe fn fill_task(rec: *mut ExecRecord, task: usize, fl: &mut u32) -> (usize, usize) {
        unsafe {
            (*rec).pid = read_or_flag(fl, task, off!(task_tgid));
            read_comm(&raw mut (*rec).comm, task, fl);
            // The parent process: the group leader of the thread that forked us,
            // so its name is the process's, not a thread's.
            let parent: usize = read_or_flag(fl, task, off!(task_real_parent));
            let parent: usize = read_or_flag(fl, parent, off!(task_group_leader));
            (*rec).ppid = read_or_flag(fl, parent, off!(task_tgid));
            read_comm(&raw mut (*rec).parent_comm, parent, fl);
            let cred: usize = read_or_flag(fl, task, off!(task_cred));
            (*rec).uid = read_or_flag(fl, cred, off!(cred_uid));
            (*rec).gid = read_or_flag(fl, cred, off!(cred_gid));
            (*rec).euid = read_or_flag(fl, cred, off!(cred_euid));
            (*rec).egid = read_or_flag(fl, cred, off!(cred_egid));
            (*rec).loginuid = if off!(task_loginuid) == ABSENT as usize {
                u32::MAX
            } else {
                read_or_flag(fl, task, off!(task_loginuid))
            };
            (parent, cred)
        }
    }

    #[inline(always)]
    unsafe fn read_comm(dst: *mut [u8; COMM_LEN], task: usize, fl: &mut u32) {
        let r = unsafe {
            bpf_probe_read_kernel(
                dst.cast(),
                COMM_LEN as u32,
                (task + off!(task_comm)) as *const _,
            )
        };
        if r != 0 {
            *fl |= flags::READ_ERROR;
        }
    }

    /// Identity of the executed file.
    #[inline(always)]
    unsafe fn fill_file(rec: *mut ExecRecord, inode: usize, fl: &mut u32) {
        unsafe {
            (*rec).ino = read_or_flag(fl, inode, off!(inode_ino));
            (*rec).nlink = read_or_flag(fl, inode, off!(inode_nlink));
            let mode: u16 = read_or_flag(fl, inode, off!(inode_mode));
            (*rec).mode = u32::from(mode);
            let sb: usize = read_or_flag(fl, inode, off!(inode_sb));
            (*rec).dev = read_or_flag(fl, sb, off!(sb_dev));
            (*rec).ctime_sec = read_or_flag(fl, inode, off!(inode_ctime_sec));
            (*rec).ctime_nsec = read_or_flag(fl, inode, off!(inode_ctime_nsec));
        }
    }

    /// The argument vector, as the kernel copied it onto the new image's stack,
    /// into `dst`; its length goes to `args_len`.
    #[inline(always)]
    unsafe fn fill_args(
        rec: *mut ExecRecord,
        dst: *mut u8,
        task: usize,
        bprm: usize,
        fl: &mut u32,
    ) {
        unsafe {
            let argc: i32 = read_or_flag(fl, bprm, off!(bprm_argc));
            (*rec).argc = argc as u32;
            (*rec).args_len = 0;
            let mm: usize = read_or_flag(fl, task, off!(task_mm));
            let (Ok(start), Ok(end)) = (
                read::<u64>(mm, off!(mm_arg_start)),
                read::<u64>(mm, off!(mm_arg_end)),
            ) else {
                *fl |= flags::ARGS_UNREADABLE;
                return;
            };
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
                *fl |= flags::ARGS_UNREADABLE;
                return;
            }
            (*rec).args_len = len as u32;
        }
    }

    /// The eBPF programs use GPL-only helpers; the code is MIT and GPL.
    #[unsafe(no_mangle)]
    #[unsafe(link_section = "license")]
    pub static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
        // SAFETY: the verifier rejects any program that could reach a panic.
        unsafe { core::hint::unreachable_unchecked() }
    }
}

/// On the host this target is a stub: the real object is built for `bpfel-unknown-none`.
#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!("tinyexec-ebpf is eBPF bytecode; build it with `cargo xtask build`");
    std::process::exit(2);
}
