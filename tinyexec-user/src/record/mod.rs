//! The JSON records tinyexec emits, one object per line: what they hold
//! (here; field names are the dotted names analysts query, ECS-style, and
//! docs/events.md documents each one), the heartbeat's part (`heartbeat`), and
//! how each record is made from an exec, a loss or the counters (`builder`).
//! Uses `exec/` (what an exec is), nothing above it.

pub mod builder;
#[cfg(test)]
pub mod field_names;
pub mod heartbeat;
#[cfg(test)]
pub mod samples;

use serde::{Serialize, Serializer};

use heartbeat::Heartbeat;

/// What every record carries about where it comes from.
#[derive(Clone, Debug, Serialize)]
pub struct Host {
    pub hostname: String,
    pub boot_id: String,
}

#[derive(Debug, Serialize)]
pub struct Event {
    pub action: Action,
    pub kind: Kind,
    /// Per-run sequence number of emitted records, from 1 (set at emission).
    pub sequence: u64,
}

/// `event.action`: what happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Exec,
    /// Prevent mode stopped it: SIGKILL before its first instruction.
    Killed,
    /// Prevent mode refused it: its `execve` failed with EPERM (BPF LSM).
    Denied,
    Lost,
    Heartbeat,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Exec => "exec",
            Self::Killed => "killed",
            Self::Denied => "denied",
            Self::Lost => "lost",
            Self::Heartbeat => "heartbeat",
        }
    }
}

/// `event.kind`: what the record is to the SOC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// The rule matched, or its verdict could not be reached (`rule.verdict`).
    Alert,
    /// A match an exclusion covers.
    Suppressed,
    /// Another exec.
    Event,
    /// Counters.
    Metric,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Alert => "alert",
            Self::Suppressed => "suppressed",
            Self::Event => "event",
            Self::Metric => "metric",
        }
    }
}

// Each name is spelled once, in `as_str`.
impl Serialize for Action {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl Serialize for Kind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[derive(Debug, Serialize)]
pub struct Parent {
    pub pid: u32,
    pub name: String,
    /// The parent's executable as the kernel resolved it: unlike `name`, not
    /// something a process sets for itself.
    pub executable: Option<String>,
    /// The parent's pid in the process's pid namespace; 0 when the parent is
    /// outside it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vpid: Option<u32>,
}

/// The process's cgroup in the hierarchy the sensor reads.
#[derive(Debug, Serialize)]
pub struct Cgroup {
    pub id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub path_truncated: bool,
}

/// Inode numbers of the process's namespaces, as `/proc/PID/ns/*` shows them.
#[derive(Debug, Default, Serialize)]
pub struct Namespaces {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mnt: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub net: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uts: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<u32>,
    /// Every one of them is PID 1's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<bool>,
}

/// The container the exec ran in (ECS `container`): its id and runtime from
/// its cgroup path, its name and image from the runtime's state.
#[derive(Debug, Serialize)]
pub struct Container {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<Image>,
}

/// ECS `container.image`.
#[derive(Debug, Serialize)]
pub struct Image {
    pub name: String,
    /// One tag (ECS allows an array; a container runs one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash: Option<ImageHash>,
}

/// ECS `container.image.hash`: the image's digests, `algorithm:value`.
#[derive(Debug, Serialize)]
pub struct ImageHash {
    pub all: Vec<String>,
}

/// ECS `orchestrator`: `kubernetes` when the cgroup is a pod's or the
/// runtime names the pod.
#[derive(Debug, Serialize)]
pub struct Orchestrator {
    #[serde(rename = "type")]
    pub kind: &'static str,
}

/// The pod, as Elastic's Kubernetes fields name it beside ECS's
/// `container` (`kubernetes.pod.uid` since schema 1.1).
#[derive(Debug, Serialize)]
pub struct Kubernetes {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub pod: Pod,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<KubernetesContainer>,
}

#[derive(Debug, Serialize)]
pub struct Pod {
    pub uid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// The container's name in the pod's spec.
#[derive(Debug, Serialize)]
pub struct KubernetesContainer {
    pub name: String,
}

#[derive(Debug, Serialize)]
pub struct Process {
    pub pid: u32,
    /// The thread that called exec (differs from `pid` when a non-leader thread exec'd).
    pub exec_tid: u32,
    pub name: String,
    pub executable: String,
    /// The file named in exec, when the kernel ran an interpreter for it (a
    /// `#!` script, a `binfmt_misc` handler): `executable` is the interpreter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exec_path: Option<String>,
    pub command_line: String,
    pub args: Vec<String>,
    pub args_count: u32,
    pub args_truncated: bool,
    pub uid: u32,
    pub gid: u32,
    pub euid: u32,
    pub egid: u32,
    pub user: String,
    pub group: String,
    pub effective_user: String,
    pub login_uid: Option<u32>,
    pub login_user: Option<String>,
    pub parent: Parent,
    /// Same as `parent.name`: the name the analysts' queries already use.
    pub parent_process_name: String,
    /// The pid in the process's own pid namespace (what it sees as its pid).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vpid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<Cgroup>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<Namespaces>,
}

#[derive(Debug, Serialize)]
pub struct File {
    pub path: String,
    pub name: String,
    pub directory: String,
    pub size: i64,
    pub inode: u64,
    pub device: u64,
    pub nlink: u32,
    /// Octal permission bits, as `stat -c %a` (ECS `file.mode`).
    pub mode: String,
    /// No links left: deleted before or while it ran.
    pub deleted: bool,
    pub memfd: bool,
    /// Nothing stopped writes to the file while it ran (its writer count,
    /// `i_writecount`, was not negative): a memfd with a writable descriptor.
    pub writable: bool,
    /// The file's change time when it ran (ECS `file.ctime`).
    pub ctime: String,
    /// The path walk stopped early: `path` is only its tail.
    pub path_truncated: bool,
    /// Not reachable from any mount root (memfd and other pseudo files).
    pub path_disconnected: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash: Option<Hash>,
    /// Alerts on the file named in exec (`process.exec_path`) when an
    /// interpreter ran for it and that file matched, read by name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<TargetFile>,
}

#[derive(Debug, Serialize)]
pub struct TargetFile {
    /// As given to exec.
    pub path: String,
    pub size: u64,
    pub inode: u64,
    pub device: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash: Option<Hash>,
}

#[derive(Debug, Serialize)]
pub struct Hash {
    pub sha256: String,
}

#[derive(Debug, Serialize)]
pub struct RuleString {
    pub identifier: &'static str,
    /// Every offset where the string occurs in the bytes seen.
    pub offsets: Vec<usize>,
}

#[derive(Debug, Serialize)]
pub struct Rule {
    pub name: &'static str,
    /// `match`, or `undetermined` when bytes the verdict needs could not be read.
    pub verdict: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub strings: Vec<RuleString>,
}

#[derive(Debug, Serialize)]
pub struct User {
    pub id: u32,
    pub name: String,
}

/// The version of the record schema (docs/schema.md): MINOR for new optional
/// fields (1.1: heartbeats, aggregated repeats; 1.2: the workload's names),
/// MAJOR for incompatible changes.
pub const SCHEMA_VERSION: &str = "1.2";

/// The sensor that wrote the record (ECS `agent`).
#[derive(Clone, Debug, Serialize)]
pub struct Agent {
    pub name: &'static str,
    pub version: &'static str,
    /// New at every start of the sensor: with `event.sequence` it orders this
    /// run's records and shows gaps.
    pub ephemeral_id: String,
}

/// The record's `tinyexec` object: facts about the sensor's own view of it
/// (schema version, losses, where the verdict's bytes came from).
#[derive(Debug, Default, Serialize)]
pub struct Tinyexec {
    pub schema_version: &'static str,
    /// Records the kernel could not deliver since the previous record of this run.
    pub lost_since_previous: u64,
    /// Kernel boot-clock time of the exec, ns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ktime_ns: Option<u64>,
    /// A kernel read failed; some fields are zero.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_error: Option<bool>,
    /// Where the bytes behind the rule's verdict came from: `kernel`,
    /// `kernel+exe`, or `none` (see `rule.reason`). Alerts only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_source: Option<&'static str>,
    /// Prevent mode asked the kernel to kill it but no signal could be sent.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub kill_failed: bool,
    /// This exec repeats the alert with this `event.sequence` within the
    /// repeat window (see `repeats`): with a command line new to the window it
    /// is an alert still; otherwise (`--all-execs` only) it is not another alert.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repeat_of: Option<u64>,
    /// A container's names could not be had from its runtime's state: why
    /// (the record carries its id and what the cgroup said).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_lookup_error: Option<String>,
}

/// What an aggregate record says about the repeats it stands for (see the
/// flood bound, `run/repeats.rs`).
#[derive(Debug, Serialize)]
pub struct Repeats {
    /// Execs folded into this record (the alert emitted at once not included).
    pub count: u64,
    /// When the first of them ran; the record's `@timestamp` and details are the last one's.
    pub first_timestamp: String,
    /// `event.sequence` of the alert they repeat.
    pub of_sequence: u64,
    /// The window, seconds.
    pub window_secs: u64,
}

/// The exclusion that suppressed an alert.
#[derive(Debug, Serialize)]
pub struct ExclusionRef {
    pub name: String,
    /// Its line in the exclusions file.
    pub line: usize,
}

#[derive(Debug, Serialize)]
pub struct Lost {
    /// Records lost since the previous `lost` record.
    pub count: u64,
    /// Records lost since the sensor started.
    pub total: u64,
}

#[derive(Debug, Serialize)]
pub struct Record {
    #[serde(rename = "@timestamp")]
    pub timestamp: String,
    pub event: Event,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<Rule>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exclusion: Option<ExclusionRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<Process>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<File>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<User>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub orchestrator: Option<Orchestrator>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<Kubernetes>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lost: Option<Lost>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repeats: Option<Repeats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat: Option<Heartbeat>,
    pub host: Host,
    pub agent: Agent,
    pub tinyexec: Tinyexec,
}
