//! tinyexec's kernel programs: one BTF tracepoint on `sched_process_exec`.
//!
//! The tracepoint fires once per successful execve/execveat, after the new
//! image is committed and before it runs its first instruction, so what we read
//! here is what really runs. Kernel struct offsets come from the running
//! kernel's BTF, handed over by user space in the read-only global `OFFSETS`.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod kernel;
#[cfg(target_arch = "bpf")]
mod path;
#[cfg(target_arch = "bpf")]
mod prevent;

#[cfg(target_arch = "bpf")]
mod program {
    use aya_ebpf::{
        helpers::{
            bpf_ktime_get_boot_ns,
            generated::{bpf_probe_read_kernel, bpf_probe_read_user, bpf_send_signal},
        },
        macros::{btf_tracepoint, map},
        maps::{PerCpuArray, RingBuf},
        programs::BtfTracePointContext,
    };
    use tinyexec_ebpf::{
        ABSENT, ARGS_MAX, COMM_LEN, Config, ExecEvent, HEADER_LEN, Offsets, PATH_MAX, flags, rule,
    };

    use crate::{
        kernel::{off, read, read_or_flag},
        path, prevent,
    };

    /// Exec records to user space. User space sets the size at load time.
    #[map]
    static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 23, 0);

    /// Records that could not be reserved (ring buffer full), per CPU.
    #[map]
    static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

    /// Kernel struct field offsets, from BTF at load time.
    #[unsafe(no_mangle)]
    pub(crate) static OFFSETS: Offsets = unsafe { core::mem::zeroed() };

    /// Behaviour switches, set at load time.
    #[unsafe(no_mangle)]
    pub(crate) static CONFIG: Config = Config {
        all_execs: 0,
        max_path_depth: tinyexec_ebpf::DEFAULT_PATH_DEPTH,
        prevent: 0,
    };

    /// Per-CPU copy of the header for the prevent check: it must run even when
    /// the ring buffer is full.
    #[map]
    static SCRATCH: PerCpuArray<[u8; HEADER_LEN]> = PerCpuArray::with_max_entries(1, 0);

    #[btf_tracepoint(function = "sched_process_exec")]
    pub fn tinyexec_exec(ctx: BtfTracePointContext) -> i32 {
        // sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
        let task: usize = ctx.arg(0);
        let old_pid: i32 = ctx.arg(1);
        let bprm: usize = ctx.arg(2);
        on_exec(task, old_pid as u32, bprm);
        0
    }

    #[inline(always)]
    fn on_exec(task: usize, old_pid: u32, bprm: usize) {
        let mut fl = 0u32;
        let file: usize = read_or_flag(&mut fl, bprm, off!(bprm_file));
        let inode: usize = read_or_flag(&mut fl, file, off!(file_inode));
        let size: i64 = read_or_flag(&mut fl, inode, off!(inode_size));
        let candidate = fl == 0 && size >= 0 && rule::size_can_match(size as u64);
        // Alerts-only mode: a non-candidate costs these three reads and nothing more.
        let all_execs = unsafe { core::ptr::read_volatile(&raw const CONFIG.all_execs) } != 0;
        if !candidate && !all_execs {
            return;
        }
        let prevent = unsafe { core::ptr::read_volatile(&raw const CONFIG.prevent) } != 0;
        if candidate && prevent {
            fl |= prevent_match(bprm, size);
        }
        let Some(mut entry) = EVENTS.reserve::<ExecEvent>(0) else {
            if let Some(lost) = LOST.get_ptr_mut(0) {
                // Per-CPU slot and tracepoint programs do not nest on one CPU: no atomic needed.
                unsafe { *lost += 1 };
            }
            return;
        };
        let ev = entry.as_mut_ptr();
        if candidate {
            fl |= flags::CANDIDATE;
        }
        unsafe {
            (*ev).ktime_ns = bpf_ktime_get_boot_ns();
            (*ev).file_size = size;
            (*ev).old_pid = old_pid;
            fill_task(ev, task, &mut fl);
            fill_file(ev, file, inode, &mut fl);
            fill_args(ev, task, bprm, &mut fl);
            if candidate {
                let r = bpf_probe_read_kernel(
                    (&raw mut (*ev).header).cast(),
                    HEADER_LEN as u32,
                    (bprm + off!(bprm_buf)) as *const _,
                );
                if r == 0 {
                    fl |= flags::HEADER;
                } else {
                    fl |= flags::READ_ERROR;
                }
            }
            let (path_off, path_flags) = path::walk(&raw mut (*ev).path, file);
            (*ev).path_off = path_off;
            let (parent_off, parent_flags) = match parent_exe(task) {
                Some(parent_file) => path::walk(&raw mut (*ev).parent_path, parent_file),
                None => (PATH_MAX as u32, 0),
            };
            (*ev).parent_path_off = parent_off;
            (*ev).parent_path_flags = parent_flags;
            (*ev).flags = fl | path_flags;
        }
        entry.submit(0);
    }

    /// Prevent mode: evaluates the rule on the header and, on a match, kills the
    /// new image before it returns to user space. Returns KILLED/KILL_FAILED or 0.
    #[inline(always)]
    fn prevent_match(bprm: usize, size: i64) -> u32 {
        let Some(buf) = SCRATCH.get_ptr_mut(0) else {
            return 0;
        };
        let r = unsafe {
            bpf_probe_read_kernel(
                buf.cast(),
                HEADER_LEN as u32,
                (bprm + off!(bprm_buf)) as *const _,
            )
        };
        if r != 0 {
            return 0;
        }
        let seen = if size < HEADER_LEN as i64 {
            size as usize
        } else {
            HEADER_LEN
        };
        if !prevent::matches(unsafe { &*buf }, seen) {
            return 0;
        }
        // SIGKILL is delivered before the first user-space instruction.
        // -EBUSY (or any error) means no signal was sent: say so.
        if unsafe { bpf_send_signal(9) } == 0 {
            flags::KILLED
        } else {
            flags::KILL_FAILED
        }
    }

    /// The parent process's executable file (`mm->exe_file`); None for kernel threads.
    #[inline(always)]
    fn parent_exe(task: usize) -> Option<usize> {
        let parent: usize = read(task, off!(task_real_parent)).ok()?;
        let leader: usize = read(parent, off!(task_group_leader)).ok()?;
        let mm: usize = read(leader, off!(task_mm)).ok()?;
        if mm == 0 {
            return None;
        }
        let file: usize = read(mm, off!(mm_exe_file)).ok()?;
        (file != 0).then_some(file)
    }

    /// Identity of the new process and its parent.
    #[inline(always)]
    unsafe fn fill_task(ev: *mut ExecEvent, task: usize, fl: &mut u32) {
        unsafe {
            (*ev).pid = read_or_flag(fl, task, off!(task_tgid));
            read_comm(&raw mut (*ev).comm, task, fl);
            // The parent process: the group leader of the thread that forked us,
            // so its name is the process's, not a thread's.
            let parent: usize = read_or_flag(fl, task, off!(task_real_parent));
            let parent: usize = read_or_flag(fl, parent, off!(task_group_leader));
            (*ev).ppid = read_or_flag(fl, parent, off!(task_tgid));
            read_comm(&raw mut (*ev).parent_comm, parent, fl);
            let cred: usize = read_or_flag(fl, task, off!(task_cred));
            (*ev).uid = read_or_flag(fl, cred, off!(cred_uid));
            (*ev).gid = read_or_flag(fl, cred, off!(cred_gid));
            (*ev).euid = read_or_flag(fl, cred, off!(cred_euid));
            (*ev).egid = read_or_flag(fl, cred, off!(cred_egid));
            (*ev).loginuid = if off!(task_loginuid) == ABSENT as usize {
                u32::MAX
            } else {
                read_or_flag(fl, task, off!(task_loginuid))
            };
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
    unsafe fn fill_file(ev: *mut ExecEvent, _file: usize, inode: usize, fl: &mut u32) {
        unsafe {
            (*ev).ino = read_or_flag(fl, inode, off!(inode_ino));
            (*ev).nlink = read_or_flag(fl, inode, off!(inode_nlink));
            let mode: u16 = read_or_flag(fl, inode, off!(inode_mode));
            (*ev).mode = mode as u32;
            let sb: usize = read_or_flag(fl, inode, off!(inode_sb));
            (*ev).dev = read_or_flag(fl, sb, off!(sb_dev));
        }
    }

    /// The argument vector, as the kernel copied it onto the new image's stack.
    #[inline(always)]
    unsafe fn fill_args(ev: *mut ExecEvent, task: usize, bprm: usize, fl: &mut u32) {
        unsafe {
            let argc: i32 = read_or_flag(fl, bprm, off!(bprm_argc));
            (*ev).argc = argc as u32;
            (*ev).args_len = 0;
            let mm: usize = read_or_flag(fl, task, off!(task_mm));
            let Ok(start) = read::<u64>(mm, off!(mm_arg_start)) else {
                *fl |= flags::ARGS_UNREADABLE;
                return;
            };
            let Ok(end) = read::<u64>(mm, off!(mm_arg_end)) else {
                *fl |= flags::ARGS_UNREADABLE;
                return;
            };
            let mut len = end.wrapping_sub(start);
            if len > ARGS_MAX as u64 {
                len = ARGS_MAX as u64;
                *fl |= flags::ARGS_TRUNCATED;
            }
            let r =
                bpf_probe_read_user((&raw mut (*ev).args).cast(), len as u32, start as *const _);
            if r == 0 {
                (*ev).args_len = len as u32;
            } else {
                *fl |= flags::ARGS_UNREADABLE;
            }
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
