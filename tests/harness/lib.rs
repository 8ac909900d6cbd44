//! Harness for tinyexec's end-to-end tests: start the real sensor (real eBPF
//! programs, real kernel), really exec binaries, read the JSON it prints.
//!
//! Tests need root and BPF. Without them they fail loudly; none passes by skipping.
#![expect(
    clippy::expect_used,
    reason = "the harness panics with a message: that is the failure report"
)]

pub mod barrier;
pub mod btf;
pub mod cef;
pub mod container;
pub mod corpus;
pub mod elf;
pub mod fuse;
pub mod port;
pub mod process;
pub mod rsyslog;
pub mod schema;
pub mod sentinel;
pub mod tmpfs;
pub mod yaml;

use std::{
    ffi::OsStr,
    fs,
    io::{BufRead, BufReader},
    os::unix::{fs::PermissionsExt, process::ExitStatusExt},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use process::{Missed, Proc};
use serde_json::Value;

/// How long the sensor may take to load and attach: 60 s, or
/// `$TINYEXEC_READY_TIMEOUT` seconds (the VM matrix raises it: the verifier
/// is many times slower under emulation).
pub fn ready_timeout() -> Duration {
    timeout_from_env("TINYEXEC_READY_TIMEOUT", 60)
}

/// How long an expected record may take to arrive: 10 s, or `$TINYEXEC_EVENT_TIMEOUT` seconds.
pub fn event_timeout() -> Duration {
    timeout_from_env("TINYEXEC_EVENT_TIMEOUT", 10)
}

fn timeout_from_env(var: &str, default_secs: u64) -> Duration {
    let secs = match std::env::var(var) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("${var}={v:?}: expected whole seconds")),
        Err(_) => default_secs,
    };
    Duration::from_secs(secs)
}

/// Panics unless we are root: the tests load eBPF programs.
pub fn require_root() {
    // SAFETY: geteuid cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the end-to-end tests load eBPF programs and must run as root (use `cargo xtask test` as root)"
    );
}

/// Flags that make a sensor emit only the alerts of files in `dir`: an
/// exclusions file in `dir` counts every other alert (`--suppressed count`).
/// Every sensor sees every matching exec on the host; a test whose outcome
/// depends on what reaches an output (a spool's bound, a queue that must be
/// empty) sees only its own.
pub fn only_alerts_from(dir: &TempDir) -> Vec<std::ffi::OsString> {
    let exclusions = dir.path().join("others.txt");
    fs::write(
        &exclusions,
        format!(
            "# Other tests' alerts\nNOT file.directory=={}\n",
            Value::from(dir.path().to_str().expect("UTF-8 path"))
        ),
    )
    .expect("write the exclusions");
    ["--suppressed", "count", "--exclusions"]
        .into_iter()
        .map(Into::into)
        .chain([exclusions.into_os_string()])
        .collect()
}

/// The sensor binary: `$TINYEXEC_SENSOR` (set by `cargo xtask test`), else the one
/// built next to this test binary.
pub fn sensor_path() -> PathBuf {
    if let Some(p) = std::env::var_os("TINYEXEC_SENSOR") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test> -> target/<profile>/tinyexec-sensor
    let p = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary location")
        .join("tinyexec-sensor");
    assert!(
        p.exists(),
        "{} not built: run `cargo xtask test`, or set TINYEXEC_SENSOR",
        p.display()
    );
    p
}

/// A name no other test or run uses.
pub fn unique(tag: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "tx-{tag}-{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A world-readable scratch directory (other uids exec from it), removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(unique(tag));
        fs::create_dir_all(&dir).expect("create temp dir");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod temp dir");
        // The real path: events name files as the kernel resolved them.
        Self(fs::canonicalize(&dir).expect("canonicalize temp dir"))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes an executable file (mode 0755) and returns its path.
    pub fn exe(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        write_exe(&p, bytes);
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

pub fn write_exe(path: &Path, bytes: &[u8]) {
    fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// The 64-bit exit-0 tiny ELF of this machine's architecture.
pub fn tiny_exit0() -> Vec<u8> {
    elf::TinyElf::new(elf::Arch::native())
        .build()
        .expect("tiny ELF")
}

/// A tiny ELF that sleeps `ms` then exits 0.
pub fn tiny_sleeper(ms: u32) -> Vec<u8> {
    let mut t = elf::TinyElf::new(elf::Arch::native());
    t.actions = vec![elf::Action::SleepMs(ms)];
    t.build().expect("tiny ELF")
}

/// A runnable tiny ELF that matches the rule (`$s1` then `$s2` as its
/// trailer), running `actions` first, padded to `total_len` when given.
pub fn matching_elf(
    arch: elf::Arch,
    actions: Vec<elf::Action>,
    total_len: Option<usize>,
) -> Vec<u8> {
    let mut t = elf::TinyElf::new(arch);
    t.actions = actions;
    t.trailer = [&tinyexec_ebpf::rule::S1[..], &tinyexec_ebpf::rule::S2[..]].concat();
    t.total_len = total_len;
    t.build().expect("tiny ELF")
}

/// The 64-bit matching tiny ELF that exits 0 at once: a stand-in for the stager.
pub fn stager() -> Vec<u8> {
    matching_elf(elf::Arch::native(), Vec::new(), None)
}

/// Lower-case hex SHA-256, as records carry it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A memfd holding `bytes`, kept open for writing (no CLOEXEC: children
/// inherit it, as `execveat_fd` needs), and its name.
pub fn memfd_named(bytes: &[u8]) -> (std::os::fd::OwnedFd, String) {
    use std::os::fd::FromRawFd as _;
    let unique_name = unique("memfd");
    let name = std::ffi::CString::new(unique_name.clone()).expect("no NUL");
    // SAFETY: a valid C string.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), 0) };
    assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: a descriptor we just created and own.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    let mut f = fs::File::from(fd.try_clone().expect("dup"));
    std::io::Write::write_all(&mut f, bytes).expect("write the memfd");
    (fd, unique_name)
}

/// [`memfd_named`] without the name.
pub fn memfd_with(bytes: &[u8]) -> std::os::fd::OwnedFd {
    memfd_named(bytes).0
}

/// Runs `execveat(fd, "", argv, envp, AT_EMPTY_PATH)` in a fresh child, with
/// argv `["fileless", marker]`: a fileless exec the way droppers do it.
pub fn execveat_fd(fd: i32, marker: &str) -> Child {
    use std::{ffi::CString, os::unix::process::CommandExt as _};
    let argv0 = CString::new("fileless").expect("no NUL");
    let arg1 = CString::new(marker).expect("marker without NUL");
    let empty = CString::new("").expect("no NUL");
    let mut cmd = Command::new("/nonexistent-never-run");
    // SAFETY: the closure only calls execveat (async-signal-safe) on data
    // prepared before fork.
    unsafe {
        cmd.pre_exec(move || {
            let argv = [argv0.as_ptr(), arg1.as_ptr(), std::ptr::null()];
            let envp = [std::ptr::null::<libc::c_char>()];
            libc::syscall(
                libc::SYS_execveat,
                fd,
                empty.as_ptr(),
                argv.as_ptr(),
                envp.as_ptr(),
                libc::AT_EMPTY_PATH,
            );
            Err(std::io::Error::last_os_error())
        });
    }
    spawn(&mut cmd)
}

/// Polls `cond` every 20 ms until it holds, failing with `what` after [`event_timeout`]:
/// for effects outside the sensor's stdout (files, spools).
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + event_timeout();
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Spawns, retrying on ETXTBSY: another test thread may fork while a file we
/// just wrote is still open for writing in its child.
pub fn spawn(cmd: &mut Command) -> Child {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match cmd.spawn() {
            Ok(child) => return child,
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("spawn {cmd:?}: {e}"),
        }
    }
}

/// What a finished command printed, stdout then stderr, for a failure's message.
#[must_use]
pub fn output_text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `cmd` to its end and returns its stdout, trimmed.
///
/// # Panics
///
/// When it cannot start or does not succeed (with what it printed).
pub fn stdout_of(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        output_text(&out)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The overall exposure `systemd-analyze security` gives `unit` in its output.
#[must_use]
pub fn exposure_of(analyze_output: &str, unit: &str) -> Option<f64> {
    let lead = format!("Overall exposure level for {unit}: ");
    analyze_output
        .lines()
        .find_map(|l| l.split(lead.as_str()).nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// Runs to completion, asserting success.
pub fn run_ok(cmd: &mut Command) {
    let status = spawn(cmd).wait().expect("wait");
    assert!(status.success(), "{cmd:?}: {status}");
}

/// This process's name as the kernel knows it (what children see as their parent's name).
pub fn own_comm() -> String {
    fs::read_to_string("/proc/self/comm")
        .expect("/proc/self/comm")
        .trim_end()
        .to_owned()
}

/// What the sensor printed on stdout.
#[derive(Default)]
struct Stdout {
    records: Vec<Value>,
    /// `CLOCK_BOOTTIME` when each record's line was read, ns.
    arrivals: Vec<u64>,
    /// Records that broke the published schema.
    violations: Vec<String>,
    closed: bool,
}

/// A running `tinyexec-sensor run`, with its output collected as it comes.
pub struct Sensor {
    proc: Proc,
    stopped: bool,
    started: Instant,
    stdout: Arc<(Mutex<Stdout>, Condvar)>,
    reader: Option<thread::JoinHandle<()>>,
}

/// Its process, not the records collected so far (a failing test prints those itself).
impl std::fmt::Debug for Sensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sensor")
            .field("pid", &self.pid())
            .field("started", &self.started)
            .finish_non_exhaustive()
    }
}

impl Sensor {
    /// Starts `tinyexec-sensor run ARGS` and waits for its `ready` line.
    pub fn start<I, S>(args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Self::start_with(Command::new(sensor_path()).arg("run").args(args))
    }

    /// Starts a prepared sensor command and waits for its `ready` line.
    pub fn start_with(cmd: &mut Command) -> Self {
        require_root();
        let mut s = Self::spawn(cmd);
        s.wait_ready();
        s
    }

    /// Starts without waiting for `ready` (for failure-path tests).
    pub fn spawn(cmd: &mut Command) -> Self {
        let started = Instant::now();
        let mut proc = Proc::spawn("the sensor", cmd.stdout(Stdio::piped()))
            .unwrap_or_else(|e| panic!("{e:#}"));
        let out = proc.take_stdout().expect("stdout");
        let stdout = Arc::new((Mutex::new(Stdout::default()), Condvar::new()));
        let shared = Arc::clone(&stdout);
        let reader = thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("sensor printed a non-JSON line ({e}): {line}"));
                let arrived = boottime_ns();
                let violation = schema::check(&v).err();
                let (m, cv) = &*shared;
                let mut g = m.lock().expect("lock");
                if let Some(why) = violation {
                    g.violations.push(format!("{why}\n  in {line}"));
                }
                g.records.push(v);
                g.arrivals.push(arrived);
                drop(g);
                cv.notify_all();
            }
            let (m, cv) = &*shared;
            m.lock().expect("lock").closed = true;
            cv.notify_all();
        });
        Self {
            proc,
            stopped: false,
            started,
            stdout,
            reader: Some(reader),
        }
    }

    fn wait_ready(&mut self) {
        if let Err(why) = self.try_wait_ready() {
            panic!("{why}");
        }
    }

    /// Waits for `ready`; returns how long it took from the start, or why it
    /// never came (the sensor exited first, or [`ready_timeout`] passed), with its stderr.
    pub fn try_wait_ready(&mut self) -> Result<Duration, String> {
        let timeout = ready_timeout();
        match self.proc.wait_line(0, process::is_ready_line, timeout) {
            Ok((_, at)) => Ok(at.duration_since(self.started)),
            Err(Missed::Exited) => Err(format!("sensor exited before ready:\n{}", self.stderr())),
            Err(Missed::TimedOut) => Err(format!(
                "sensor not ready after {timeout:?}:\n{}",
                self.stderr()
            )),
        }
    }

    /// Waits for the first record satisfying `pred`.
    pub fn wait_for(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait_for_n(what, 1, pred).remove(0)
    }

    /// Waits until at least `n` records satisfy `pred`; returns all that do.
    pub fn wait_for_n(&self, what: &str, n: usize, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        let (m, cv) = &*self.stdout;
        let timeout = event_timeout();
        let deadline = Instant::now() + timeout;
        let mut g = m.lock().expect("lock");
        loop {
            let found: Vec<Value> = g.records.iter().filter(|v| pred(v)).cloned().collect();
            if found.len() >= n {
                return found;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || g.closed {
                let last: Vec<String> = g
                    .records
                    .iter()
                    .rev()
                    .take(5)
                    .map(Value::to_string)
                    .collect();
                let all = g.records.len();
                // Unlock first: a panic holding the lock would poison it for the reader.
                drop(g);
                panic!(
                    "expected {n} record(s) of {what}, got {} after {timeout:?}; \
                     {all} records in all, the last ones:\n{}\nstderr:\n{}",
                    found.len(),
                    last.join("\n"),
                    self.stderr()
                );
            }
            g = cv.wait_timeout(g, left).expect("wait").0;
        }
    }

    /// Waits for a stderr line containing `needle`, counting from line `from`;
    /// returns the index after it (to wait for the next one).
    pub fn wait_stderr(&self, needle: &str, from: usize) -> usize {
        match self
            .proc
            .wait_line(from, |l| l.contains(needle), event_timeout())
        {
            Ok((i, _)) => i + 1,
            Err(Missed::Exited | Missed::TimedOut) => {
                panic!("no stderr line with {needle:?}:\n{}", self.stderr())
            }
        }
    }

    /// Lines of stderr so far.
    pub fn stderr_lines(&self) -> usize {
        self.proc.stderr_lines()
    }

    /// Every record so far that satisfies `pred`.
    pub fn records(&self, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        let (m, _) = &*self.stdout;
        m.lock()
            .expect("lock")
            .records
            .iter()
            .filter(|v| pred(v))
            .cloned()
            .collect()
    }

    /// Every record so far that satisfies `pred`, with `CLOCK_BOOTTIME` when its
    /// line was read (ns: the clock of `tinyexec.ktime_ns`).
    pub fn records_timed(&self, pred: impl Fn(&Value) -> bool) -> Vec<(Value, u64)> {
        let (m, _) = &*self.stdout;
        let g = m.lock().expect("lock");
        g.records
            .iter()
            .zip(&g.arrivals)
            .filter(|(v, _)| pred(v))
            .map(|(v, t)| (v.clone(), *t))
            .collect()
    }

    pub fn stderr(&self) -> String {
        self.proc.stderr()
    }

    /// Its pid; 0 once stopped.
    pub fn pid(&self) -> u32 {
        if self.stopped {
            return 0;
        }
        u32::try_from(self.proc.pid()).unwrap_or(0)
    }

    /// Sends `signal` and waits for exit and for the output to be read.
    pub fn stop_with(&mut self, signal: i32) -> ExitStatus {
        assert!(!self.stopped, "sensor already stopped");
        self.stopped = true;
        let status = self.proc.stop(signal, EXIT_TIMEOUT);
        self.finish(status)
    }

    /// Waits for the sensor to exit by itself (failure paths).
    pub fn wait_exit(&mut self) -> ExitStatus {
        assert!(!self.stopped, "sensor already stopped");
        self.stopped = true;
        let status = self.proc.wait_exit(EXIT_TIMEOUT);
        self.finish(status)
    }

    fn finish(&mut self, status: anyhow::Result<ExitStatus>) -> ExitStatus {
        let status = status.unwrap_or_else(|e| panic!("{e:#}"));
        if let Some(r) = self.reader.take() {
            r.join().expect("reader thread");
        }
        status
    }
}

/// How long the sensor may take to exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

impl Drop for Sensor {
    fn drop(&mut self) {
        self.proc.kill();
        let (m, _) = &*self.stdout;
        let violations = m.lock().map(|g| g.violations.clone()).unwrap_or_default();
        assert!(
            violations.is_empty() || thread::panicking(),
            "records broke docs/schema:\n{}",
            violations.join("\n")
        );
    }
}

/// `CLOCK_BOOTTIME` now, ns: the clock of the records' `tinyexec.ktime_ns`.
pub fn boottime_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid pointer to a local timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &raw mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// `rec[a][b]...` by a dotted name, as analysts address fields.
pub fn field<'a>(rec: &'a Value, dotted: &str) -> &'a Value {
    dotted.split('.').fold(rec, |v, k| {
        let next = match v {
            Value::Array(a) => k.parse::<usize>().ok().and_then(|i| a.get(i)),
            _ => v.get(k),
        };
        next.unwrap_or(&Value::Null)
    })
}

pub fn field_str<'a>(rec: &'a Value, dotted: &str) -> &'a str {
    field(rec, dotted)
        .as_str()
        .unwrap_or_else(|| panic!("{dotted} is not a string in {rec}"))
}

pub fn field_u64(rec: &Value, dotted: &str) -> u64 {
    field(rec, dotted)
        .as_u64()
        .unwrap_or_else(|| panic!("{dotted} is not a number in {rec}"))
}

/// Predicate: an exec record (run, killed, or refused) of the file at `path`.
pub fn exec_of(path: &Path) -> impl Fn(&Value) -> bool + '_ {
    move |v| {
        matches!(
            field(v, "event.action").as_str(),
            Some("exec" | "killed" | "denied")
        ) && field(v, "file.path").as_str() == path.to_str()
    }
}

/// Predicate: a heartbeat record.
pub fn is_heartbeat(v: &Value) -> bool {
    field(v, "event.action") == "heartbeat"
}

/// One output's counters in a heartbeat: written, failed, dropped, queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutputCounts {
    pub written: u64,
    pub failed: u64,
    pub dropped: u64,
    pub queued: u64,
}

/// `output`'s counters in heartbeat `h`, checked to account for every record
/// the sensor emitted before it (every output is offered every record, and
/// the heartbeat is numbered after them): written + failed + dropped + queued
/// = its `event.sequence` - 1.
pub fn output_counts(h: &Value, output: &str) -> OutputCounts {
    let at = |k: &str| field_u64(h, &format!("heartbeat.outputs.{output}.{k}"));
    let c = OutputCounts {
        written: at("written"),
        failed: at("failed"),
        dropped: at("dropped"),
        queued: at("queued"),
    };
    let offered = field_u64(h, "event.sequence") - 1;
    assert_eq!(
        c.written + c.failed + c.dropped + c.queued,
        offered,
        "{output}: {c:?} do not add up to the {offered} records before the heartbeat: {h}"
    );
    c
}

/// Runs `path` once; a SIGKILL is accepted (another test's `--prevent` sensor
/// kills matching execs on the whole host; the exec happened all the same).
pub fn run_or_killed(cmd: &mut Command) {
    let status = spawn(cmd).wait().expect("wait");
    assert!(
        status.success() || status.signal() == Some(libc::SIGKILL),
        "{cmd:?}: {status}"
    );
}

/// Did the process die of a signal?
pub fn signalled(st: &ExitStatus) -> Option<i32> {
    st.signal()
}
