//! Loading and attaching the kernel programs.
//!
//! aya's `EbpfLoader` is not used: it parses the kernel's whole BTF when it is
//! created (19 MiB at its peak here, more than the sensor needs for anything
//! else), which a raw tracepoint with offsets from our own BTF reader has no
//! use for; and it hands the verifier's log over only when a load fails,
//! while we report the instructions verified on every kernel. aya-obj (aya's
//! own object parser and relocator) prepares the programs, aya's `MapData`
//! creates the maps and reads them; the loads and the attachment are four
//! bpf(2) commands (`bpf_sys.rs`).

use std::{
    collections::HashMap,
    ffi::CString,
    os::fd::{AsFd as _, AsRawFd as _, OwnedFd},
    path::Path,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow};
use aya::maps::{Array, Map, MapData, PerCpuArray, RingBuf};
use aya_obj::{EbpfSectionKind, Object};
use tinyexec_ebpf::{Config, Offsets, control, names, stage};

use super::{
    bpf_sys::{self, BPF_LOG_LEVEL1, BPF_LOG_STATS, LOG_MAX, ProgKind},
    btf, cgroups,
    log::{self as kernel_log, KernelLog},
    offsets,
};

/// The eBPF object built from `tinyexec-ebpf` by build.rs.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tinyexec"));

pub struct LoadOptions<'a> {
    pub btf_path: &'a Path,
    pub config: Config,
    /// Ring buffer size in bytes (a power of two, at least one page).
    pub ring_buffer_bytes: u32,
}

/// What must stay open for the programs to run. Dropping it detaches them
/// and takes them down in the order that leaves nothing in the kernel (see
/// `Drop`).
pub struct Programs {
    link: Option<OwnedFd>,
    /// Prevent mode's LSM program's attachment, when it is in force.
    lsm_link: Option<OwnedFd>,
    programs: Vec<OwnedFd>,
    /// Maps only the kernel side reads (the work area, the read-only globals).
    maps: Vec<MapData>,
    /// The program array the entry and the stages tail-call through. Kept
    /// open while they run: the kernel empties a program array when its last
    /// user-space descriptor closes.
    stages: Option<MapData>,
}

impl Drop for Programs {
    /// The program array goes last, once nothing but us holds it, and then
    /// goes at once. While it lives without a user-space descriptor, each
    /// process that opens it by id and closes it again (`bpftool map list`,
    /// any agent that lists BPF maps) makes the kernel schedule its emptying
    /// once more; two of those before a scheduled emptying has run leak the
    /// array for good (each takes a reference, the one run drops one).
    /// Closed first, with the stages in it, it outlived the sensor by about
    /// 50 ms: its programs hold it until the kernel has freed them.
    fn drop(&mut self) {
        // No new runs of the LSM program, then of the entry.
        drop(self.lsm_link.take());
        drop(self.link.take());
        let Some(stages) = self.stages.take() else {
            return;
        };
        // The array's references to the stages, dropped while the array is
        // still ours (a load that failed half-way left some slots empty).
        for (_, index) in stage::ALL {
            let _ = bpf_sys::map_delete(stages.fd().as_fd(), &index.to_ne_bytes());
        }
        // Maps only the programs use go once the kernel has freed the last
        // program using them, and every program reads the read-only globals.
        let ids: Vec<u32> = self.maps.iter().filter_map(map_id).collect();
        self.programs.clear();
        self.maps.clear();
        wait_until_gone(&ids, FREE_WAIT_BLIND);
        let id = map_id(&stages);
        drop(stages);
        // Its emptying is queued to run on this CPU: let it run now.
        wait_until_gone(id.as_slice(), Duration::from_millis(10));
    }
}

impl Programs {
    /// `STAGES[index] = prog`.
    fn install(&self, index: u32, prog: &OwnedFd) -> std::io::Result<()> {
        let stages = self
            .stages
            .as_ref()
            .ok_or_else(|| std::io::Error::other("the program array is closed"))?;
        bpf_sys::map_update(
            stages.fd().as_fd(),
            &index.to_ne_bytes(),
            &prog.as_raw_fd().cast_unsigned().to_ne_bytes(),
        )
    }
}

fn map_id(map: &MapData) -> Option<u32> {
    map.info().ok().map(|i| i.id())
}

/// How long a stop waits for the kernel to free a map (the programs take
/// about 70 ms here; bounded, as a stop must end).
const FREE_TIMEOUT: Duration = Duration::from_secs(2);
/// Without `CAP_SYS_ADMIN` (the systemd unit) map ids cannot be listed: a
/// fixed wait, a few times what freeing the programs takes here.
const FREE_WAIT_BLIND: Duration = Duration::from_millis(250);

/// Waits until none of the maps `ids` is left in the kernel, or `blind`
/// when their ids cannot be listed.
fn wait_until_gone(ids: &[u32], blind: Duration) {
    if ids.is_empty() {
        return;
    }
    let deadline = Instant::now() + FREE_TIMEOUT;
    loop {
        match bpf_sys::map_ids() {
            Ok(live) if !ids.iter().any(|id| live.contains(id)) => return,
            Ok(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(1)),
            Ok(_) => {
                log::debug!("maps {ids:?} still there after {FREE_TIMEOUT:?}");
                return;
            }
            Err(err) => {
                log::debug!("cannot list map ids ({err}): waiting {blind:?}");
                thread::sleep(blind);
                return;
            }
        }
    }
}

/// Loaded and attached programs and the maps user space reads.
pub struct Loaded {
    /// Owns the programs and their link: dropping it detaches.
    pub programs: Programs,
    pub events: RingBuf<MapData>,
    pub lost: PerCpuArray<MapData, u64>,
    /// Execs the entry program saw, per CPU.
    pub execs: PerCpuArray<MapData, u64>,
    pub control: Array<MapData, u32>,
    /// The kernel program's own log lines (`--log-level debug`).
    pub kernel_log: KernelLog,
    /// Instructions the verifier processed, per program, in load order.
    pub verified: Vec<(&'static str, Option<u32>)>,
    /// Which build of the entry runs.
    pub entry: Entry,
    /// Prevent mode's mechanism in force.
    pub prevent: Prevent,
}

/// How `--prevent` stops a matching exec on this kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Prevent {
    Off,
    /// The LSM program on `bprm_check_security` refuses the exec (`EPERM`);
    /// the kill stays armed behind it. `unconfirmed`: why the kernel's list
    /// of active LSMs could not be read (the program loaded and attached,
    /// but whether the kernel runs it is not known).
    Lsm {
        unconfirmed: Option<String>,
    },
    /// SIGKILL at `sched_process_exec`: the LSM refusal is not available,
    /// for the reason given.
    Kill {
        why: String,
    },
}

impl Prevent {
    /// `lsm`, `kill`, or `off`: for the heartbeat and the `ready` line.
    pub fn mechanism(&self) -> &'static str {
        match self {
            Prevent::Off => "off",
            Prevent::Lsm { .. } => "lsm",
            Prevent::Kill { .. } => "kill",
        }
    }

    /// Why the other mechanism is not in force (or what is not confirmed).
    pub fn reason(&self) -> Option<&str> {
        match self {
            Prevent::Off => None,
            Prevent::Lsm { unconfirmed } => unconfirmed.as_deref(),
            Prevent::Kill { why } => Some(why),
        }
    }

    /// For the log and the `ready` line.
    pub fn describe(&self) -> String {
        match self {
            Prevent::Off => "prevent off".to_owned(),
            Prevent::Lsm { unconfirmed } => {
                let mut s = format!(
                    "prevent: lsm ({} refuses a matching exec on {} with EPERM; the kill at {} \
                     stays armed behind it)",
                    names::LSM_PROGRAM,
                    names::LSM_HOOK,
                    names::TRACEPOINT
                );
                if let Some(why) = unconfirmed {
                    s.push_str(", not confirmed: ");
                    s.push_str(why);
                }
                s
            }
            Prevent::Kill { why } => format!(
                "prevent: kill (SIGKILL at {} before the first instruction; no LSM refusal: {why})",
                names::TRACEPOINT
            ),
        }
    }
}

/// The kernel's list of active LSMs.
const ACTIVE_LSMS: &str = "/sys/kernel/security/lsm";

/// Whether the kernel runs BPF LSM programs: `Err(why not)` when its list
/// of active LSMs lacks `bpf`; `Ok(Some(why))` when the list cannot be read
/// (the load is tried all the same: the kernel's own answer is the better
/// reason); `Ok(None)` when `bpf` is in it.
pub(crate) fn bpf_lsm_active() -> Result<Option<String>, String> {
    match std::fs::read_to_string(ACTIVE_LSMS) {
        Ok(list) if list.trim().split(',').any(|l| l == "bpf") => Ok(None),
        Ok(list) => Err(format!(
            "bpf is not in {ACTIVE_LSMS} ({}): the kernel runs no BPF LSM program (its `lsm=` \
             boot parameter or CONFIG_LSM decide)",
            list.trim()
        )),
        Err(e) => Ok(Some(format!("cannot read {ACTIVE_LSMS} ({e})"))),
    }
}

/// The entry's two builds (`tinyexec-ebpf/src/stages/exec.rs`): the same
/// program, its fast path read with plain loads or with helper calls.
pub enum Entry {
    /// A BTF-typed tracepoint: the fast path's fields are plain loads.
    Typed,
    /// A raw tracepoint, its fields read with helper calls: the kernel
    /// would not take the typed one, for the reason given.
    Raw { why: String },
}

impl Entry {
    /// The program's name.
    pub fn name(&self) -> &'static str {
        match self {
            Entry::Typed => names::PROGRAM,
            Entry::Raw { .. } => names::PROGRAM_RAW,
        }
    }

    /// For the log: which build runs, and why.
    pub fn describe(&self) -> String {
        let how = match self {
            Entry::Typed => "BTF-typed tracepoint, fields read with plain loads".to_owned(),
            Entry::Raw { why } => format!("raw tracepoint, fields read with helper calls: {why}"),
        };
        format!("{} ({how})", self.name())
    }
}

/// The kernel's bound on instructions processed while verifying one program.
pub const VERIFIER_LIMIT: u32 = 1_000_000;

/// How many verifier lines an error shows: the cause is at the end.
const VERIFIER_TAIL: usize = 30;

/// Returns freed heap to the system: glibc keeps it otherwise, and the BTF
/// parse below would stay in the sensor's resident size for its life.
fn release_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free heap pages.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The bytes of a plain `#[repr(C)]` value without padding.
fn bytes_of<T: aya::Pod>(v: &T) -> &[u8] {
    // SAFETY: Pod types are plain data; the slice covers exactly `v`.
    unsafe { std::slice::from_raw_parts(std::ptr::from_ref(v).cast(), size_of::<T>()) }
}

/// An id in the running kernel's own BTF, by `find`; only that file gives
/// them (`whose`: what attaches by such ids, for the reason when `btf_path`
/// is another file).
fn kernel_id(
    btf_path: &Path,
    whose: &str,
    find: impl FnOnce() -> Result<u32, String>,
) -> Result<u32, String> {
    if btf_path == Path::new(btf::KERNEL_BTF) {
        find()
    } else {
        Err(format!(
            "--btf {} is not the running kernel's own {}, whose {whose} attaches by",
            btf_path.display(),
            btf::KERNEL_BTF
        ))
    }
}

pub fn load(opts: &LoadOptions<'_>) -> Result<Loaded> {
    let kernel_btf = btf::Btf::from_file(opts.btf_path)?;
    let offsets: Offsets = offsets::resolve(&kernel_btf).with_context(|| {
        format!(
            "reading kernel struct offsets from {}",
            opts.btf_path.display()
        )
    })?;
    let hierarchy = cgroups::choose(&kernel_btf).with_context(|| {
        format!(
            "choosing the cgroup hierarchy (controller ids from {})",
            opts.btf_path.display()
        )
    })?;
    // A typed tracepoint attaches by the running kernel's own type id, and
    // prevent mode's LSM program by the id of the kernel's function for its hook.
    let typed_target = kernel_id(opts.btf_path, "type ids a typed tracepoint", || {
        kernel_btf
            .typedef_id(names::TRACEPOINT_TYPE)
            .ok_or_else(|| format!("{} has no type {}", btf::KERNEL_BTF, names::TRACEPOINT_TYPE))
    });
    let lsm_target = if opts.config.prevent == 0 {
        Err(String::new())
    } else {
        kernel_id(opts.btf_path, "function ids an LSM program", || {
            kernel_btf.func_id(names::LSM_FUNC).ok_or_else(|| {
                format!(
                    "{} has no function {}: the kernel is built without BPF LSM (CONFIG_BPF_LSM)",
                    btf::KERNEL_BTF,
                    names::LSM_FUNC
                )
            })
        })
    };
    // Only the offsets, the controller id and those types were needed from the BTF.
    drop(kernel_btf);
    release_heap();
    log::info!("cgroups: {}", hierarchy.describe());
    let mut config = opts.config;
    (config.cgroup_mode, config.cgroup_subsys) = hierarchy.config();
    cgroups::set_chosen(hierarchy);

    let mut obj = Object::parse(OBJECT).context("parsing the eBPF object")?;
    let log_level = kernel_log::level();
    obj.patch_map_data(HashMap::from([
        (names::OFFSETS, (bytes_of(&offsets), true)),
        (names::CONFIG, (bytes_of(&config), true)),
        (kernel_log::LEVEL, (&[log_level][..], true)),
    ]))
    .context("setting the eBPF object's globals")?;
    let mut maps = create_maps(
        &obj,
        opts.ring_buffer_bytes,
        kernel_log::ring_bytes(log_level),
    )?;

    let text_sections = obj.functions.keys().map(|(section, _)| *section).collect();
    let objs = obj.maps.clone();
    let fds = objs
        .iter()
        .map(|(name, m)| {
            let fd = maps[name.as_str()].fd().as_fd().as_raw_fd();
            (name.as_str(), fd, m)
        })
        .collect::<Vec<_>>();
    obj.relocate_maps(fds.into_iter(), &text_sections)
        .map_err(|e| anyhow!("relocating the eBPF object's maps: {e}"))?;
    obj.relocate_calls(&text_sections)
        .map_err(|e| anyhow!("relocating the eBPF object's calls: {e}"))?;
    obj.sanitize_functions(aya::features());

    // Owned from here on, so that every error path below takes the programs
    // down in order (see `Programs`' `Drop`).
    let stages = maps
        .remove(names::STAGES)
        .with_context(|| format!("map `{}` missing from the eBPF object", names::STAGES))?;
    let mut loaded = Programs {
        link: None,
        lsm_link: None,
        programs: Vec::new(),
        maps: Vec::new(),
        stages: Some(stages),
    };
    // The entry is loaded first, to learn which of its builds this kernel
    // takes: the stages are loaded as the same kind (a program array takes
    // one type of program). It is attached last.
    let (entry, entry_kind, entry_count, entry_built) = load_entry(&obj, typed_target)?;
    // The stages, in the program array (aya installs only programs it
    // loaded itself: the update is ours): the entry may only run once
    // everything it hands over to is in place.
    let mut verified = Vec::new();
    for (name, index) in stage::ALL {
        let (fd, count) = load_program(&obj, name, entry_kind)?;
        verified.push((name, count));
        let installed = loaded.install(index, &fd);
        loaded.programs.push(fd);
        installed.with_context(|| format!("installing stage `{name}`"))?;
    }
    let mut take = |name: &str| {
        maps.remove(name)
            .with_context(|| format!("map `{name}` missing from the eBPF object"))
            .and_then(|m| Map::from_map_data(m).with_context(|| format!("map `{name}`")))
    };
    let events = RingBuf::try_from(take(names::EVENTS)?)?;
    let lost = PerCpuArray::try_from(take(names::LOST)?)?;
    let control = Array::try_from(take(names::CONTROL)?)?;
    let execs = PerCpuArray::try_from(take(names::EXECS)?)?;
    let kernel_log = KernelLog::new(RingBuf::try_from(take(kernel_log::MAP)?)?);
    loaded.maps = maps.into_values().collect();
    verified.push((entry_built.name(), entry_count));
    let tracepoint = CString::new(names::TRACEPOINT).context("tracepoint name")?;
    let name = matches!(entry_kind, ProgKind::RawTracepoint).then_some(tracepoint.as_c_str());
    let link = bpf_sys::raw_tracepoint_open(name, entry.as_fd());
    loaded.programs.push(entry);
    loaded.link =
        Some(link.with_context(|| format!("attaching to tracepoint {}", names::TRACEPOINT))?);
    let prevent = if opts.config.prevent == 0 {
        Prevent::Off
    } else {
        // Attached after the entry: the kill is armed before the refusal.
        match attach_lsm(&obj, lsm_target, &mut loaded) {
            Ok((count, unconfirmed)) => {
                verified.push((names::LSM_PROGRAM, count));
                Prevent::Lsm { unconfirmed }
            }
            Err(why) => Prevent::Kill { why },
        }
    };
    Ok(Loaded {
        programs: loaded,
        events,
        lost,
        execs,
        control,
        kernel_log,
        verified,
        entry: entry_built,
        prevent,
    })
}

/// Prevent mode's LSM program, loaded and attached where the kernel runs
/// BPF LSM programs and takes ours. Returns its verified instructions and
/// what is not confirmed, or why the kill stays the only mechanism.
fn attach_lsm(
    obj: &Object,
    target: Result<u32, String>,
    loaded: &mut Programs,
) -> Result<(Option<u32>, Option<String>), String> {
    let unconfirmed = bpf_lsm_active()?;
    let attach_btf_id = target?;
    let kind = ProgKind::Lsm { attach_btf_id };
    let (fd, count) = load_program(obj, names::LSM_PROGRAM, kind).map_err(|e| {
        log::debug!("the LSM program: {e:#}");
        e.to_string()
    })?;
    let link = bpf_sys::raw_tracepoint_open(None, fd.as_fd());
    loaded.programs.push(fd);
    let link = link.map_err(|e| {
        // ENOTSUPP, which the kernel keeps to itself (no libc name).
        const ENOTSUPP: i32 = 524;
        let why = if e.raw_os_error() == Some(ENOTSUPP) {
            "ENOTSUPP: this kernel cannot attach BPF trampolines on this architecture (arm64 \
             from 6.4 on)"
                .to_owned()
        } else {
            e.to_string()
        };
        format!(
            "the kernel refused to attach {} to {}: {why}",
            names::LSM_PROGRAM,
            names::LSM_FUNC
        )
    })?;
    loaded.lsm_link = Some(link);
    Ok((count, unconfirmed))
}

/// The entry as a BTF-typed tracepoint where the kernel takes it, else as a
/// raw one, saying why.
fn load_entry(
    obj: &Object,
    typed_target: Result<u32, String>,
) -> Result<(OwnedFd, ProgKind, Option<u32>, Entry)> {
    let why = match typed_target {
        Ok(attach_btf_id) => {
            let kind = ProgKind::BtfTracepoint { attach_btf_id };
            match load_program(obj, names::PROGRAM, kind) {
                Ok((fd, count)) => return Ok((fd, kind, count, Entry::Typed)),
                Err(e) => {
                    // The refusal for the log line; the verifier's words,
                    // its cause, for the debug log.
                    log::debug!("the typed entry: {e:#}");
                    e.to_string()
                }
            }
        }
        Err(why) => why,
    };
    let kind = ProgKind::RawTracepoint;
    let (fd, count) = load_program(obj, names::PROGRAM_RAW, kind)?;
    Ok((fd, kind, count, Entry::Raw { why }))
}

/// Creates every map of the object, with the ring buffer at `ring_bytes`
/// and the kernel log's at `log_bytes`; data sections get their contents,
/// and the read-only one is frozen so the verifier takes the offsets and the
/// configuration as constants.
fn create_maps(obj: &Object, ring_bytes: u32, log_bytes: u32) -> Result<HashMap<String, MapData>> {
    let mut maps = HashMap::new();
    for (name, m) in &obj.maps {
        let mut m = m.clone();
        if name == names::EVENTS {
            m.set_max_entries(ring_bytes);
        } else if name == kernel_log::MAP {
            m.set_max_entries(log_bytes);
        }
        let kind = m.section_kind();
        let data = m.data().to_vec();
        let map =
            MapData::create(m, name, None).with_context(|| format!("creating map `{name}`"))?;
        if matches!(kind, EbpfSectionKind::Rodata | EbpfSectionKind::Data) && !data.is_empty() {
            bpf_sys::map_update(map.fd().as_fd(), &0u32.to_ne_bytes(), &data)
                .with_context(|| format!("filling map `{name}`"))?;
        }
        if kind == EbpfSectionKind::Rodata {
            bpf_sys::map_freeze(map.fd().as_fd())
                .with_context(|| format!("freezing map `{name}`"))?;
        }
        maps.insert(name.clone(), map);
    }
    Ok(maps)
}

/// Loads (verifies) one program. Returns its descriptor and the instructions
/// the verifier processed, from its own statistics line.
fn load_program(
    obj: &Object,
    name: &'static str,
    kind: ProgKind,
) -> Result<(OwnedFd, Option<u32>)> {
    let prog = obj
        .programs
        .get(name)
        .with_context(|| format!("program `{name}` missing from the eBPF object"))?;
    let insns = &obj.functions[&prog.function_key()].instructions;
    let load = |level: u32, log: &mut [u8]| {
        bpf_sys::prog_load(kind, name, insns, &prog.license, level, log)
    };
    let mut log = vec![0u8; 64 << 10];
    match load(BPF_LOG_STATS, &mut log) {
        Ok(fd) => Ok((fd, bpf_sys::processed_insns(&bpf_sys::log_text(&log)))),
        Err(first) => {
            // Again with the whole trace: the verifier's cause is at its end.
            // A log that does not fit fails with ENOSPC: grow it.
            let mut size = 1 << 20;
            loop {
                let mut log = vec![0u8; size];
                let again = load(BPF_LOG_LEVEL1 | BPF_LOG_STATS, &mut log);
                let full = matches!(&again, Err(e) if e.raw_os_error() == Some(libc::ENOSPC));
                if full && size < LOG_MAX {
                    size = (size * 16).min(LOG_MAX);
                    continue;
                }
                let text = bpf_sys::log_text(&log);
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(VERIFIER_TAIL)..].join("\n");
                // Loaded with the log on, refused without (an oversized log
                // is no reason), or refused again: report the first refusal,
                // the verifier's words as its cause.
                drop(again);
                return Err(anyhow!("the verifier said:\n{tail}")
                    .context(format!("the kernel refused program `{name}` ({first})")));
            }
        }
    }
}

/// Turns the start-up self-test's switch on or off ([`control::SELF_TEST`]).
pub fn set_self_test(control: &mut Array<MapData, u32>, on: bool) -> Result<()> {
    control
        .set(control::SELF_TEST, u32::from(on), 0)
        .context("writing the self-test switch")
}

impl Loaded {
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
