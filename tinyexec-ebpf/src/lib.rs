//! Records and settings shared by the kernel programs and the user-space daemon.
//!
//! Everything here is `#[repr(C)]` and defined once: the eBPF side writes these
//! layouts, the user side (feature `user`) reads them back as `aya::Pod`.
#![no_std]
#![expect(
    clippy::inline_always,
    reason = "eBPF code: each helper is inlined into its program (BPF-to-BPF calls mix with tail calls only from kernel 5.10 on)"
)]

pub mod rule;

/// Bytes of the file header the kernel has read into `linux_binprm::buf`
/// (`BINPRM_BUF_SIZE`) before the new image runs.
pub const HEADER_LEN: usize = 256;
/// Longest path the kernel side rebuilds (`PATH_MAX`).
pub const PATH_MAX: usize = 4096;
/// Longest single path component copied (`NAME_MAX`).
pub const NAME_MAX: usize = 255;
/// The path is built backwards from `PATH_MAX`; the extra component of slack
/// lets the verifier prove every component write stays inside the buffer.
pub const PATH_BUF: usize = PATH_MAX + NAME_MAX + 1;
/// Bytes of the name given to exec copied when an interpreter ran for it
/// (with its NUL; longer names are flagged): the per-CPU work area (32 KiB,
/// the most a per-CPU map value may be) has room for this much more.
pub const EXEC_PATH_MAX: usize = 2048;
/// Bytes of the argument vector copied (the rest is flagged as truncated).
pub const ARGS_MAX: usize = 4096;
/// `TASK_COMM_LEN`.
pub const COMM_LEN: usize = 16;
/// Default bound on path components walked (dentries plus mount crossings).
pub const DEFAULT_PATH_DEPTH: u32 = 64;
/// Bytes of the cgroup path copied (its components from the leaf up, each
/// with its NUL; a longer path is flagged [`flags::CGROUP_PATH_TRUNCATED`]).
/// Container and pod ids sit in the last components, which come first.
pub const CGROUP_PATH_MAX: usize = 1024;
/// Cgroup levels walked up from the task's cgroup to the hierarchy's root
/// (Kubernetes nests four, a container inside a pod's container eight).
pub const CGROUP_DEPTH: u32 = 32;
/// Largest bound on path components that `--max-path-depth` accepts: every
/// kernel of the matrix verifies 512 (about 120,000 instructions per walk on
/// 6.18); 1024 exceeds the verifier's 8192 pending branches everywhere.
pub const MAX_PATH_DEPTH: u32 = 512;

/// Bits of [`ExecEvent::flags`].
pub mod flags {
    /// The path walk stopped before reaching the root (too deep, too long, or a read failed).
    pub const PATH_TRUNCATED: u32 = 1 << 0;
    /// The file is not reachable from any mount root (memfd, other pseudo files).
    pub const PATH_DISCONNECTED: u32 = 1 << 1;
    /// The argument vector was longer than [`crate::ARGS_MAX`].
    pub const ARGS_TRUNCATED: u32 = 1 << 2;
    /// [`crate::ExecEvent::header`] holds the file's first bytes.
    pub const HEADER: u32 = 1 << 3;
    /// A kernel read failed; the affected fields are zero.
    pub const READ_ERROR: u32 = 1 << 4;
    /// The argument vector could not be read from the new image's memory.
    pub const ARGS_UNREADABLE: u32 = 1 << 5;
    /// The file's size is below the rule's limit: its content decides a match.
    pub const CANDIDATE: u32 = 1 << 6;
    /// Prevent mode: the rule matched in the kernel and SIGKILL was sent.
    pub const KILLED: u32 = 1 << 7;
    /// Prevent mode: the rule matched but the signal could not be sent (e.g. -EBUSY).
    pub const KILL_FAILED: u32 = 1 << 8;
    /// Sent while the sensor's start-up self-test runs ([`crate::control::SELF_TEST`]);
    /// [`crate::ExecRecord::self_test_tgid`] is set.
    pub const SELF_TEST: u32 = 1 << 9;
    /// The kernel ran an interpreter (a `#!` script's, or a `binfmt_misc`
    /// handler) for the file named in exec: its name follows ([`crate::ExecRecord::exec_path_len`]).
    pub const INTERPRETED: u32 = 1 << 10;
    /// The name given to exec was longer than what was copied.
    pub const EXEC_PATH_TRUNCATED: u32 = 1 << 11;
    /// The cgroup walk stopped before the hierarchy's root (deeper than
    /// [`crate::CGROUP_DEPTH`], longer than [`crate::CGROUP_PATH_MAX`], or unreadable).
    pub const CGROUP_PATH_TRUNCATED: u32 = 1 << 12;
    /// Prevent mode: the LSM program refused the exec (`execve` failed with
    /// `EPERM`; nothing of the file ran). The record comes from
    /// `bprm_check_security`, not from `sched_process_exec`: the process is
    /// the caller (its pid, name, parent and credentials), and it has no
    /// arguments, parent path, cgroup or namespaces ([`crate::DENY_AREA`]).
    pub const DENIED: u32 = 1 << 13;
}

/// One successful exec, as the kernel saw it once the new image was committed.
///
/// On the wire a record is this fixed part followed by its variable parts,
/// back to back: the file's first `header_len` bytes, `args_len` bytes of
/// NUL-separated arguments, the path (`path_len` bytes), the parent's
/// executable path (`parent_path_len` bytes), the name given to exec when an
/// interpreter ran for it (`exec_path_len` bytes), the cgroup path
/// (`cgroup_path_len` bytes: the names from the task's cgroup up to the
/// hierarchy's root, leaf first, each ending in NUL). Only what is used
/// travels: a typical record is a few hundred bytes, not the 15 KiB of its bounds.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ExecRecord {
    /// `bpf_ktime_get_boot_ns()` at the tracepoint.
    pub ktime_ns: u64,
    /// `i_size` of the executed file.
    pub file_size: i64,
    /// `i_ino` of the executed file.
    pub ino: u64,
    /// The file's change time (`i_ctime`), seconds and nanoseconds: any write
    /// since the exec changes it.
    pub ctime_sec: i64,
    /// The id of the task's cgroup in the hierarchy [`Config::cgroup_mode`]
    /// names (its kernfs node id: the cgroup directory's inode number); 0 when
    /// none is read.
    pub cgroup_id: u64,
    /// [`flags`] bits.
    pub flags: u32,
    /// Thread-group id after exec (the exec'ing thread becomes the leader).
    pub pid: u32,
    /// Thread id that called exec (differs from `pid` when a non-leader thread exec'd).
    pub old_pid: u32,
    /// Thread-group id of the real parent.
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub euid: u32,
    pub egid: u32,
    /// Audit login uid (`u32::MAX` when unset or not compiled in).
    pub loginuid: u32,
    /// `s_dev` of the file's superblock, in the kernel's internal encoding.
    pub dev: u32,
    pub nlink: u32,
    /// `i_mode` of the file.
    pub mode: u32,
    /// `linux_binprm::argc`.
    pub argc: u32,
    /// Bytes of the file's header that follow (`min(file_size, HEADER_LEN)`, 0 without [`flags::HEADER`]).
    pub header_len: u32,
    pub args_len: u32,
    pub path_len: u32,
    pub parent_path_len: u32,
    /// Path flags ([`flags::PATH_TRUNCATED`], [`flags::PATH_DISCONNECTED`]) of the parent's path.
    pub parent_path_flags: u32,
    /// With [`flags::SELF_TEST`]: the exec'ing process as the kernel's helper
    /// names it, with no struct offset involved, to check the offsets against.
    pub self_test_tgid: u32,
    /// What the kernel's header decision said ([`rule::HeaderVerdict`], 0 when
    /// it did not run), for user space to cross-check.
    pub kernel_verdict: u32,
    pub ctime_nsec: u32,
    /// `i_writecount` of the file: above 0 it is open for writing, 0 nothing
    /// stops a write, below 0 writes are denied while it runs.
    pub writers: i32,
    /// Bytes of the name given to exec that follow (only with [`flags::INTERPRETED`]).
    pub exec_path_len: u32,
    /// Bytes of the cgroup path that follow.
    pub cgroup_path_len: u32,
    /// Inode numbers of the task's namespaces (`ns_common.inum`, what
    /// `/proc/PID/ns/*` shows); 0 when unread. The pid namespace is the one
    /// the process lives in, not `nsproxy->pid_ns_for_children`.
    pub ns_mnt: u32,
    pub ns_pid: u32,
    pub ns_net: u32,
    pub ns_user: u32,
    pub ns_uts: u32,
    pub ns_cgroup: u32,
    /// The process's pid in its own pid namespace.
    pub vpid: u32,
    /// The parent's pid in the process's pid namespace; 0 when the parent is
    /// outside it (a container's first process).
    pub parent_vpid: u32,
    pub comm: [u8; COMM_LEN],
    pub parent_comm: [u8; COMM_LEN],
}

/// Size of the fixed part.
pub const RECORD_FIXED: usize = core::mem::size_of::<ExecRecord>();
const _: () = assert!(RECORD_FIXED == 200, "no padding in the wire layout");
/// The longest record: the fixed part and every variable part at its bound.
pub const RECORD_MAX: usize =
    RECORD_FIXED + HEADER_LEN + ARGS_MAX + 2 * PATH_MAX + EXEC_PATH_MAX + CGROUP_PATH_MAX;

/// The kernel side's per-CPU work area: the record is assembled in its first
/// `OUT_AREA` bytes; the file's path is built backwards at `PATH_SCRATCH`, the
/// parent's right after it, the cgroup path at `CGROUP_SCRATCH`.
pub const SCRATCH_LEN: usize = 32768;
/// Record offsets are masked with `OUT_AREA - 1` for the verifier; every real
/// offset is below [`RECORD_MAX`].
pub const OUT_AREA: usize = 16384;
pub const PATH_SCRATCH: usize = 20480;
/// Where the entry program leaves [`Carry`] for the stages it tail-calls.
pub const CARRY_AT: usize = OUT_AREA;
/// The cgroup path's part of the work area: [`CGROUP_PATH_MAX`] bytes and a
/// component's worth of slack, so the verifier can bound every name copied in.
pub const CGROUP_SCRATCH: usize = PATH_SCRATCH + 2 * PATH_BUF;
const _: () = assert!(CGROUP_SCRATCH + CGROUP_PATH_MAX + NAME_MAX < SCRATCH_LEN);
const _: () = assert!(RECORD_MAX <= OUT_AREA && OUT_AREA <= PATH_SCRATCH);
const _: () = assert!(CARRY_AT + core::mem::size_of::<Carry>() <= PATH_SCRATCH);
// What the verifier sees: a masked offset plus a masked length stays inside.
const _: () = assert!(OUT_AREA + 2 * PATH_MAX <= SCRATCH_LEN);
const _: () = assert!(PATH_SCRATCH + 2 * PATH_BUF <= SCRATCH_LEN);

/// The LSM program's per-CPU work area (its own, apart from [`SCRATCH_LEN`]'s:
/// it runs in the exec'ing task before `sched_process_exec`, and a refusal
/// must not disturb a record the tracepoint's stages are assembling). Its
/// record is assembled in the first [`DENY_OUT`] bytes: the fixed part, the
/// header, the path `bpf_d_path` wrote at [`DENY_PATH_AT`], and the name
/// given to exec when an interpreter ran for it.
pub const DENY_AREA: usize = 16384;
/// Record offsets in the LSM program's area are masked with `DENY_OUT - 1`.
pub const DENY_OUT: usize = 8192;
pub const DENY_PATH_AT: usize = DENY_OUT;
const _: () = assert!(RECORD_FIXED + HEADER_LEN + PATH_MAX + EXEC_PATH_MAX <= DENY_OUT);
// What the verifier sees: a masked offset plus a bounded length stays inside.
const _: () = assert!(DENY_OUT + PATH_MAX <= DENY_AREA && DENY_PATH_AT + PATH_MAX <= DENY_AREA);

/// What the entry program hands to the stages it tail-calls, in the per-CPU
/// work area (a tail call keeps only the context pointer).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Carry {
    /// Where the argument vector lies in the new image's memory
    /// (`mm->arg_start`, `mm->arg_end`; 0 when unreadable).
    pub args_start: u64,
    pub args_end: u64,
    /// `const char *` name given to exec, when an interpreter ran for it; else 0.
    pub exec_name: u64,
    /// Where the path walks start: the executed file's, then the parent
    /// process's executable's (all zero: it has none).
    pub walks: [WalkStart; 2],
    /// `struct pid *` of the task and of the parent process (the real
    /// parent's group leader), and their `level`s.
    pub pid: u64,
    pub parent_pid: u64,
    pub pid_level: u32,
    pub parent_pid_level: u32,
    /// `struct kernfs_node *` of the task's cgroup in the hierarchy user
    /// space chose (0: none chosen, or unreadable).
    pub cgroup_kn: u64,
    /// Wake user space at once (an alert, or a tail to read through /proc).
    pub urgent: u32,
    /// Where the path being walked starts in its buffer.
    pub walk_pos: u32,
    /// The walk's path flags so far.
    pub walk_flags: u32,
    #[expect(
        clippy::pub_underscore_fields,
        reason = "explicit padding: public so the struct can be built with a literal"
    )]
    pub _pad: u32,
}

/// Where a path walk starts, as the entry read it: the file's `struct
/// dentry *` and `struct vfsmount *`, and that mount's root dentry. The
/// entry reads these pointers with typed loads; the walk, a tail-called
/// stage, reads the rest with helper calls.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct WalkStart {
    pub dentry: u64,
    pub mnt: u64,
    pub root: u64,
}

/// The kernel program is split into stages, each verified on its own, so the
/// verifier's work adds up instead of multiplying: the entry (filter, rule on
/// the header, prevent, identity), the path walks, then the arguments and the
/// copy to the ring buffer. Indices into the `STAGES` program array.
pub mod stage {
    pub const EXE_PATH: u32 = 0;
    pub const PARENT_PATH: u32 = 1;
    /// Cgroup, namespaces and in-namespace pids: which container it ran in.
    pub const CONTAINER: u32 = 2;
    pub const EMIT: u32 = 3;
    /// Every stage: (program name, index), in the order they run.
    pub const ALL: [(&str, u32); 4] = [
        ("tinyexec_exe_path", EXE_PATH),
        ("tinyexec_parent_path", PARENT_PATH),
        ("tinyexec_container", CONTAINER),
        ("tinyexec_emit", EMIT),
    ];
}

/// Slots of the `CONTROL` array, which user space writes while the programs run.
pub mod control {
    /// Non-zero while the start-up self-test runs: records are flagged
    /// [`crate::flags::SELF_TEST`], and the raw-tracepoint entry, whose offsets may
    /// come from another BTF, sends every exec. The typed entry's filter
    /// does not look at it: the canary passes that filter as a rule
    /// candidate (see the entry, `stages/exec.rs`).
    pub const SELF_TEST: u32 = 0;
    pub const LEN: u32 = 1;
}

/// Bytes the fast path reads at once from `linux_binprm` and from `inode`, to
/// get several fields with one helper call (see [`Offsets::bprm_window`]).
pub const WINDOW: usize = 64;

/// Marker for an absent kernel field in [`Offsets`].
pub const ABSENT: u32 = u32::MAX;

/// Byte offsets of the kernel struct fields the programs read, computed by
/// user space from the running kernel's BTF at load time (no CO-RE here, and
/// no layout baked in at build time). Set as a read-only global.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offsets {
    // The fast path's, first: every exec reads them, and together with
    // `CONFIG` (before them in .rodata) they fill one cache line.
    pub bprm_file: u32,
    /// `const char *filename`: the name given to exec.
    pub bprm_filename: u32,
    /// `const char *interp`: the name of what the kernel last opened to run
    /// (the same pointer as `filename` unless an interpreter ran).
    pub bprm_interp: u32,
    pub file_inode: u32,
    pub inode_size: u32,
    pub inode_nlink: u32,
    /// `i_writecount.counter`.
    pub inode_writecount: u32,
    pub bprm_buf: u32,
    // The rest, read only for records.
    pub task_tgid: u32,
    pub task_real_parent: u32,
    pub task_group_leader: u32,
    pub task_cred: u32,
    pub task_mm: u32,
    pub task_comm: u32,
    /// [`ABSENT`] on kernels built without `CONFIG_AUDIT`.
    pub task_loginuid: u32,
    pub cred_uid: u32,
    pub cred_gid: u32,
    pub cred_euid: u32,
    pub cred_egid: u32,
    pub mm_arg_start: u32,
    pub mm_arg_end: u32,
    pub mm_exe_file: u32,
    pub bprm_argc: u32,
    /// Where the [`WINDOW`] bytes the fast path reads from `linux_binprm`
    /// start: they hold `file`, `filename` and `interp`.
    pub bprm_window: u32,
    /// Likewise in `inode`: they hold `i_nlink` and `i_size`.
    pub inode_window: u32,
    pub file_path_mnt: u32,
    pub file_path_dentry: u32,
    pub inode_mode: u32,
    pub inode_ino: u32,
    pub inode_sb: u32,
    /// `i_ctime_sec` (6.11+), else `__i_ctime.tv_sec` (6.6+), else `i_ctime.tv_sec`.
    pub inode_ctime_sec: u32,
    /// The nanoseconds beside it (read as 32 bits: a `long` `tv_nsec` holds < 10^9).
    pub inode_ctime_nsec: u32,
    pub sb_dev: u32,
    /// Where the [`WINDOW`] bytes a path walk reads from each `dentry`
    /// start: they hold `d_parent` and `d_name`'s `len` and `name`.
    pub dentry_window: u32,
    pub dentry_parent: u32,
    pub dentry_name_len: u32,
    pub dentry_name_ptr: u32,
    /// `struct mount` embeds `struct vfsmount mnt`; this is where.
    pub mount_mnt: u32,
    pub mount_parent: u32,
    pub mount_mountpoint: u32,
    pub vfsmount_root: u32,
    // The container's: namespaces (read by the entry), pids, cgroups.
    pub task_nsproxy: u32,
    pub task_thread_pid: u32,
    /// `struct css_set *cgroups`.
    pub task_cgroups: u32,
    pub cred_user_ns: u32,
    pub nsproxy_uts: u32,
    pub nsproxy_mnt: u32,
    pub nsproxy_net: u32,
    pub nsproxy_cgroup: u32,
    /// `ns.inum` in each namespace's struct.
    pub uts_inum: u32,
    pub mnt_inum: u32,
    pub net_inum: u32,
    pub cgroup_ns_inum: u32,
    pub user_inum: u32,
    pub pid_ns_inum: u32,
    pub pid_level: u32,
    /// `struct upid numbers[]`, each [`Offsets::upid_size`] bytes.
    pub pid_numbers: u32,
    pub upid_size: u32,
    pub upid_nr: u32,
    pub upid_ns: u32,
    pub css_set_dfl_cgrp: u32,
    /// `struct cgroup_subsys_state *subsys[]`.
    pub css_set_subsys: u32,
    pub css_cgroup: u32,
    pub cgroup_kn: u32,
    /// `kernfs_node.__parent` (6.15+), else `.parent`.
    pub kernfs_parent: u32,
    pub kernfs_name: u32,
    pub kernfs_id: u32,
}

/// Behaviour switches, set as a read-only global at load time so the verifier
/// prunes the branches a configuration never takes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Emit every exec; otherwise only rule candidates (size below the limit).
    pub all_execs: u32,
    /// Bound on path components walked.
    pub max_path_depth: u32,
    /// Kill matching execs in the kernel before their first instruction.
    pub prevent: u32,
    /// Which cgroup hierarchy names the task's cgroup ([`cgroup_mode`]).
    pub cgroup_mode: u32,
    /// With [`cgroup_mode::CONTROLLER`]: the controller's `cgroup_subsys_id`.
    pub cgroup_subsys: u32,
}

/// Values of [`Config::cgroup_mode`].
pub mod cgroup_mode {
    /// No cgroup is read.
    pub const NONE: u32 = 0;
    /// The default (v2, unified) hierarchy: `css_set->dfl_cgrp`.
    pub const UNIFIED: u32 = 1;
    /// A v1 controller's hierarchy: `css_set->subsys[id]->cgroup`.
    pub const CONTROLLER: u32 = 2;
}

impl Default for Config {
    fn default() -> Self {
        Self {
            all_execs: 0,
            max_path_depth: DEFAULT_PATH_DEPTH,
            prevent: 0,
            cgroup_mode: cgroup_mode::NONE,
            cgroup_subsys: 0,
        }
    }
}

/// Names of the objects in the eBPF program, used by both sides.
pub mod names {
    /// The entry program, attached to [`TRACEPOINT`] as a BTF-typed
    /// tracepoint; the others are [`crate::stage`]s.
    pub const PROGRAM: &str = "tinyexec_exec";
    /// The same entry as a raw tracepoint, for kernels that refuse the typed
    /// one (at most 15 bytes: the kernel keeps no more of a program's name).
    pub const PROGRAM_RAW: &str = "tinyexec_rawtp";
    /// The kernel type a BTF-typed tracepoint on [`TRACEPOINT`] attaches by.
    pub const TRACEPOINT_TYPE: &str = "btf_trace_sched_process_exec";
    pub const TRACEPOINT: &str = "sched_process_exec";
    /// Prevent mode's refusal: a BPF LSM program on [`LSM_HOOK`], attached
    /// by the kernel's function [`LSM_FUNC`].
    pub const LSM_PROGRAM: &str = "tinyexec_lsm";
    pub const LSM_HOOK: &str = "bprm_check_security";
    pub const LSM_FUNC: &str = "bpf_lsm_bprm_check_security";
    pub const DENY_SCRATCH: &str = "DENY_SCRATCH";
    pub const EVENTS: &str = "EVENTS";
    pub const LOST: &str = "LOST";
    pub const EXECS: &str = "EXECS";
    pub const STAGES: &str = "STAGES";
    pub const CONTROL: &str = "CONTROL";
    pub const SCRATCH: &str = "SCRATCH";
    pub const OFFSETS: &str = "OFFSETS";
    pub const CONFIG: &str = "CONFIG";
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain `#[repr(C)]` structs of integers and byte arrays, valid for any bit pattern.
    unsafe impl aya::Pod for super::ExecRecord {}
    unsafe impl aya::Pod for super::Offsets {}
    unsafe impl aya::Pod for super::Config {}
}
