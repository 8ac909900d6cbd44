//! What the sensor leaves in the kernel once it is gone: no `STAGES` program
//! array, however it stopped or failed to start.
//!
//! A program array outlives its last user-space descriptor until the kernel
//! has emptied it and freed its programs. Meanwhile each process that opens
//! it by id and closes it again (`bpftool map list` does that with every
//! map, as do agents that list BPF maps) makes the kernel schedule the
//! emptying once more, and two of those before a scheduled emptying has run
//! leak the array for good. The sensor used to close the array first, with
//! the stages in it, so it outlived the sensor by about 50 ms: a lister then
//! leaked it nearly every time. Here a lister opens the sensor's own array
//! (no other process's map) by id every few milliseconds from the moment the
//! sensor has exited, as `bpftool map list` run right after a stop would.
//! (A lister during the stop itself can still hit the kernel's own window
//! right after the last descriptor closes, until its queued emptying runs:
//! no order of ours closes that one.)
#![expect(
    clippy::expect_used,
    reason = "a test's helpers panic with a message: that is the failure report"
)]

use std::{
    collections::BTreeSet,
    fs,
    os::fd::{FromRawFd as _, OwnedFd},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use tinyexec_harness::{Sensor, TempDir, btf, require_root, sensor_path};

const BPF_MAP_GET_NEXT_ID: libc::c_long = 12;
const BPF_MAP_GET_FD_BY_ID: libc::c_long = 14;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_MAP_TYPE_PROG_ARRAY: u32 = 3;

/// How often the lister opens the array by id (`bpftool map list` in a loop
/// takes about 10 ms here).
const LIST_PERIOD: Duration = Duration::from_millis(2);
/// How long it goes on after the sensor exited: the old loader's array lived
/// about 50 ms past its exit.
const LIST_AFTER_EXIT: Duration = Duration::from_secs(1);
/// How long a map may take to go once its sensor exited.
const FREE_TIMEOUT: Duration = Duration::from_secs(5);

/// bpf(2) with an attribute the kernel may write its answer into.
fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> libc::c_long {
    // SAFETY: `attr` is a writable bpf_attr prefix of its own size; the
    // pointers inside (if any) outlive the call.
    unsafe { libc::syscall(libc::SYS_bpf, cmd, std::ptr::from_mut(attr), size_of::<T>()) }
}

/// The ids of every map in the kernel (walking ids opens no map).
fn map_ids() -> BTreeSet<u32> {
    let mut ids = BTreeSet::new();
    let mut attr = [0u32; 3];
    while bpf(BPF_MAP_GET_NEXT_ID, &mut attr) == 0 {
        ids.insert(attr[1]);
        attr[0] = attr[1];
    }
    ids
}

/// The map `id`, opened by id as `bpftool` does; None once it is gone.
fn open_by_id(id: u32) -> Option<OwnedFd> {
    let mut attr = [id, 0, 0];
    let fd = i32::try_from(bpf(BPF_MAP_GET_FD_BY_ID, &mut attr)).ok()?;
    // SAFETY: a new descriptor the kernel just returned (negative: an error).
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

#[repr(C)]
struct InfoAttr {
    fd: u32,
    len: u32,
    info: u64,
}

/// The name the map `id` was created with. It opens the map by id: only for
/// a map its sensor still holds (see the module's doc).
fn map_name(id: u32) -> Option<String> {
    let fd = open_by_id(id)?;
    let mut info = [0u8; 88];
    let mut attr = InfoAttr {
        fd: u32::try_from(std::os::fd::AsRawFd::as_raw_fd(&fd)).ok()?,
        len: 88,
        info: info.as_mut_ptr() as u64,
    };
    (bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) == 0).then(|| {
        // bpf_map_info: type, id, key_size, value_size, max_entries, map_flags, name[16].
        let name = &info[24..40];
        let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
        String::from_utf8_lossy(&name[..end]).into_owned()
    })
}

/// `(map_id, map_type)` of every map `pid` holds, from its fdinfo.
fn maps_held_by(pid: &str) -> Vec<(u32, u32)> {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return Vec::new();
    };
    dir.filter_map(|e| fs::read_to_string(e.ok()?.path()).ok())
        .filter_map(|text| {
            let field = |name: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .and_then(|v| v.trim().parse().ok())
            };
            Some((field("map_id:")?, field("map_type:")?))
        })
        .collect()
}

/// Processes that hold the map `id`, by pid.
fn holders(id: u32) -> Vec<String> {
    fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|pid| pid.bytes().all(|b| b.is_ascii_digit()))
        .filter(|pid| maps_held_by(pid).iter().any(|&(m, _)| m == id))
        .collect()
}

/// A program array a sensor made: its id, and its name when it was read.
type Made = (u32, Option<String>);

/// Watches a sensor from its start: finds its program array (the one it
/// holds, read from its fdinfo) and, when `list` is set, reads its name at
/// once, and from the moment `exited` is set opens and closes it by id every
/// [`LIST_PERIOD`] for [`LIST_AFTER_EXIT`] or until it is gone. Unlisted, it
/// never opens the array.
fn watch(pid: u32, exited: Arc<AtomicBool>, list: bool) -> JoinHandle<Option<Made>> {
    thread::spawn(move || {
        let pid = pid.to_string();
        let id = loop {
            let held = maps_held_by(&pid);
            if let Some(&(id, _)) = held.iter().find(|&&(_, t)| t == BPF_MAP_TYPE_PROG_ARRAY) {
                break id;
            }
            if exited.load(Ordering::SeqCst) {
                return None;
            }
            thread::sleep(Duration::from_millis(1));
        };
        if !list {
            return Some((id, None));
        }
        // Just made, the sensor still loading: opening it now changes nothing.
        let name = map_name(id);
        while !exited.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(1));
        }
        let until = Instant::now() + LIST_AFTER_EXIT;
        while Instant::now() < until {
            match open_by_id(id) {
                Some(fd) => drop(fd),
                None => break,
            }
            thread::sleep(LIST_PERIOD);
        }
        Some((id, name))
    })
}

/// One start of the sensor, watched; `stop` ends it (or sees it end) and
/// says whether that went as the case expects.
struct Case<'a> {
    name: String,
    args: Vec<std::ffi::OsString>,
    list: bool,
    /// Whether it makes a program array (None: depends on when it is killed).
    makes: Option<bool>,
    stop: &'a dyn Fn(&mut Sensor) -> Result<(), String>,
}

/// Runs `case`; returns the program array it made, if any.
fn run(case: &Case<'_>) -> Option<Made> {
    let mut sensor = Sensor::spawn(Command::new(sensor_path()).arg("run").args(&case.args));
    let exited = Arc::new(AtomicBool::new(false));
    let watcher = watch(sensor.pid(), Arc::clone(&exited), case.list);
    let outcome = (case.stop)(&mut sensor);
    exited.store(true, Ordering::SeqCst);
    let id = watcher.join().expect("the watcher thread");
    if let Err(why) = outcome {
        panic!("{}: {why}\nstderr:\n{}", case.name, sensor.stderr());
    }
    if let Some(makes) = case.makes {
        assert_eq!(
            id.is_some(),
            makes,
            "{}: whether the sensor made a program array\nstderr:\n{}",
            case.name,
            sensor.stderr()
        );
    }
    id
}

fn ready_then(signal: i32) -> impl Fn(&mut Sensor) -> Result<(), String> {
    move |s: &mut Sensor| {
        s.try_wait_ready()?;
        let status = s.stop_with(signal);
        let expected = if signal == libc::SIGKILL {
            status.code().is_none()
        } else {
            status.success()
        };
        if expected {
            Ok(())
        } else {
            Err(format!("signal {signal}: exit {status}"))
        }
    }
}

fn fails(s: &mut Sensor) -> Result<(), String> {
    let status = s.wait_exit();
    if status.success() {
        Err("it was to fail, and exited 0".into())
    } else {
        Ok(())
    }
}

fn killed_after(delay: Duration) -> impl Fn(&mut Sensor) -> Result<(), String> {
    move |s: &mut Sensor| {
        thread::sleep(delay);
        s.stop_with(libc::SIGKILL);
        Ok(())
    }
}

#[test]
fn no_program_array_is_left_behind() {
    require_root();
    let real = fs::read("/sys/kernel/btf/vmlinux").expect("/sys/kernel/btf/vmlinux");
    let doctored =
        btf::move_member(&real, "inode", "i_size", 8).expect("move inode.i_size in the BTF");
    let dir = TempDir::new("leaks");
    let bad_btf = dir.path().join("vmlinux-i_size-moved");
    fs::write(&bad_btf, doctored).expect("write the doctored BTF");
    let args = |a: &[&str]| a.iter().map(Into::into).collect::<Vec<_>>();
    let btf_args = vec!["--btf".into(), bad_btf.clone().into_os_string()];

    let term = ready_then(libc::SIGTERM);
    let int = ready_then(libc::SIGINT);
    let kill = ready_then(libc::SIGKILL);
    let kill_early = [100, 200].map(|ms| killed_after(Duration::from_millis(ms)));
    let mut cases = Vec::new();
    for (round, kill_early) in kill_early.iter().enumerate() {
        // Listed by id once they exited: the path that leaked.
        cases.push(Case {
            name: format!("SIGTERM after ready, listed (round {round})"),
            args: args(&["--all-execs"]),
            list: true,
            makes: Some(true),
            stop: &term,
        });
        cases.push(Case {
            name: format!("SIGINT after ready, listed (round {round})"),
            args: Vec::new(),
            list: true,
            makes: Some(true),
            stop: &int,
        });
        cases.push(Case {
            name: format!("self-test failure on a doctored BTF, listed (round {round})"),
            args: btf_args.clone(),
            list: true,
            makes: Some(true),
            stop: &fails,
        });
        cases.push(Case {
            name: format!("--max-path-depth refused, listed (round {round})"),
            args: args(&["--max-path-depth", "1000000"]),
            list: true,
            makes: Some(false),
            stop: &fails,
        });
        // No code of ours runs at SIGKILL: the kernel closes the descriptors
        // with the stages still in the array, which then outlives the sensor
        // as it used to on every path, and a lister can leak it. Unlisted,
        // the kernel's own teardown leaves nothing.
        cases.push(Case {
            name: format!("SIGKILL after ready (round {round})"),
            args: Vec::new(),
            list: false,
            makes: Some(true),
            stop: &kill,
        });
        cases.push(Case {
            name: format!("SIGKILL while loading (round {round})"),
            args: Vec::new(),
            list: false,
            makes: None,
            stop: kill_early,
        });
    }

    let mut made = Vec::new();
    for case in &cases {
        if let Some((id, name)) = run(case) {
            if let Some(name) = name {
                assert_eq!(
                    name, "STAGES",
                    "{}: the program array of map {id}",
                    case.name
                );
            }
            made.push((case.name.as_str(), id));
        }
    }

    // What the kernel frees after an exit, it frees within milliseconds.
    let deadline = Instant::now() + FREE_TIMEOUT;
    let left = loop {
        let live = map_ids();
        let left: Vec<&(&str, u32)> = made.iter().filter(|(_, id)| live.contains(id)).collect();
        if left.is_empty() || Instant::now() > deadline {
            break left;
        }
        thread::sleep(Duration::from_millis(50));
    };
    let described: Vec<String> = left
        .iter()
        .map(|(name, id)| {
            let held = holders(*id);
            if held.is_empty() {
                format!("map {id} ({name}): held by no process")
            } else {
                format!("map {id} ({name}): still held by pid {}", held.join(", "))
            }
        })
        .collect();
    eprintln!(
        "{} sensors made {} STAGES maps; {} left {FREE_TIMEOUT:?} after their exit",
        cases.len(),
        made.len(),
        left.len()
    );
    assert!(
        described.is_empty(),
        "STAGES program arrays left in the kernel after their sensor exited:\n  {}",
        described.join("\n  ")
    );
}
