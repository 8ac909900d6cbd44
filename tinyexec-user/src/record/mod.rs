//! The JSON records tinyexec emits, one object per line. Field names are the
//! dotted names analysts query (ECS-style); docs/events.md documents each one.

#[cfg(test)]
mod field_names;
pub mod heartbeat;

use serde::Serialize;

use tinyexec_ebpf::rule;

use crate::{
    exec::{
        clock::rfc3339,
        container::{self, Workload},
        decode::Exec,
        detect::{Source, Target, Verdict},
        identity::Names,
    },
    record::heartbeat::Heartbeat,
    run::repeats::Repeats,
};

/// What every record carries about where it comes from.
#[derive(Clone, Debug, Serialize)]
pub struct Host {
    pub hostname: String,
    pub boot_id: String,
}

#[derive(Debug, Serialize)]
pub struct Event {
    /// `exec`, `killed` (prevent mode stopped it), `lost`, `heartbeat`.
    pub action: &'static str,
    /// `alert` for rule matches, `suppressed` for matches an exclusion covers,
    /// `event` for other execs, `metric` for counters.
    pub kind: &'static str,
    /// Per-run sequence number of emitted records, from 1 (set at emission).
    pub sequence: u64,
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

/// The container the exec ran in (ECS `container`), from its cgroup path.
#[derive(Debug, Serialize)]
pub struct Container {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<&'static str>,
}

/// ECS `orchestrator`: `kubernetes` when the cgroup is a pod's.
#[derive(Debug, Serialize)]
pub struct Orchestrator {
    #[serde(rename = "type")]
    pub kind: &'static str,
}

#[derive(Debug, Serialize)]
pub struct Kubernetes {
    pub pod: Pod,
}

#[derive(Debug, Serialize)]
pub struct Pod {
    pub uid: String,
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
/// fields (1.1: heartbeats, aggregated repeats), MAJOR for incompatible changes.
pub const SCHEMA_VERSION: &str = "1.1";

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

/// A kernel (seconds, nanoseconds) time as RFC 3339.
fn ctime((sec, nsec): (i64, u32)) -> String {
    let since = std::time::Duration::new(u64::try_from(sec).unwrap_or(0), nsec.min(999_999_999));
    rfc3339(std::time::UNIX_EPOCH + since)
}

fn name_or_id(name: Option<&str>, id: u32) -> String {
    name.map_or_else(|| id.to_string(), str::to_owned)
}

/// Splits at the last '/': ("/usr/bin", "ls"); ("/", "") for the root.
fn split_path(path: &str) -> (String, String) {
    match path.rfind('/') {
        Some(0) => ("/".to_owned(), path[1..].to_owned()),
        Some(i) => (path[..i].to_owned(), path[i + 1..].to_owned()),
        None => (String::new(), path.to_owned()),
    }
}

/// The rule's part of a record, the hash of the bytes it judged, where they
/// came from, and the file named in exec when that (not what ran) matched.
fn rule_of(verdict: &Verdict) -> (Rule, Option<Hash>, &'static str, Option<&Target>) {
    match verdict {
        Verdict::Match {
            source,
            sha256,
            s1_offsets,
            s2_offsets,
            target,
        } => (
            Rule {
                name: rule::NAME,
                verdict: "match",
                reason: None,
                strings: vec![
                    RuleString {
                        identifier: "$s1",
                        offsets: s1_offsets.clone(),
                    },
                    RuleString {
                        identifier: "$s2",
                        offsets: s2_offsets.clone(),
                    },
                ],
            },
            sha256.clone().map(|sha256| Hash { sha256 }),
            Source::as_str(*source),
            target.as_ref(),
        ),
        Verdict::Undetermined { reason } => (
            Rule {
                name: rule::NAME,
                verdict: "undetermined",
                reason: Some(reason.clone()),
                strings: Vec::new(),
            },
            None,
            "none",
            None,
        ),
    }
}

/// The namespaces part: each number the kernel read, and whether all are
/// the host's when all were read and the host's are known.
fn namespaces(
    ns: &container::Namespaces,
    host: Option<container::Namespaces>,
) -> Option<Namespaces> {
    if ns.iter().all(|&n| n == 0) {
        return None;
    }
    let get = |i: usize| (ns[i] != 0).then_some(ns[i]);
    Some(Namespaces {
        mnt: get(0),
        pid: get(1),
        net: get(2),
        user: get(3),
        uts: get(4),
        cgroup: get(5),
        host: host
            .filter(|_| ns.iter().all(|&n| n != 0))
            .map(|h| h == *ns),
    })
}

pub fn exec_record(
    exec: &Exec,
    verdict: Option<&Verdict>,
    names: &mut Names,
    timestamp: String,
    host: &Host,
    agent: &Agent,
) -> Record {
    let (rule, hash, content_source, target) = match verdict.map(rule_of) {
        Some((r, h, c, t)) => (Some(r), h, Some(c), t),
        None => (None, None, None, None),
    };
    // A match on the file named in exec: its hash is that file's, not the interpreter's.
    let (hash, target) = match target {
        Some(t) => (
            None,
            Some(TargetFile {
                path: t.path.clone(),
                size: t.size,
                inode: t.inode,
                device: t.device,
                hash,
            }),
        ),
        None => (hash, None),
    };
    let user = name_or_id(names.user(exec.uid), exec.uid);
    let group = name_or_id(names.group(exec.gid), exec.gid);
    let effective_user = name_or_id(names.user(exec.euid), exec.euid);
    let login_user = exec.login_uid.map(|id| name_or_id(names.user(id), id));
    let (directory, name) = split_path(&exec.path);
    let workload = exec
        .cgroup
        .as_ref()
        .and_then(|c| c.path.as_deref())
        .map(container::parse)
        .unwrap_or_default();
    let Workload {
        container_id,
        runtime,
        pod_uid,
    } = workload;
    let vpid = (exec.vpid != 0).then_some(exec.vpid);
    Record {
        timestamp,
        event: Event {
            action: if exec.killed { "killed" } else { "exec" },
            kind: if rule.is_some() { "alert" } else { "event" },
            sequence: 0,
        },
        rule,
        exclusion: None,
        process: Some(Process {
            pid: exec.pid,
            exec_tid: exec.exec_tid,
            name: exec.comm.clone(),
            executable: exec.path.clone(),
            exec_path: exec.exec_path.clone(),
            command_line: exec.args.join(" "),
            args: exec.args.clone(),
            args_count: exec.argc,
            args_truncated: exec.args_truncated,
            uid: exec.uid,
            gid: exec.gid,
            euid: exec.euid,
            egid: exec.egid,
            user: user.clone(),
            group,
            effective_user,
            login_uid: exec.login_uid,
            login_user,
            parent: Parent {
                pid: exec.ppid,
                name: exec.parent_comm.clone(),
                executable: exec.parent_path.clone(),
                vpid: vpid.map(|_| exec.parent_vpid),
            },
            parent_process_name: exec.parent_comm.clone(),
            vpid,
            cgroup: exec.cgroup.as_ref().map(|c| Cgroup {
                id: c.id,
                path: c.path.clone(),
                path_truncated: c.truncated,
            }),
            namespaces: namespaces(&exec.namespaces, container::host_namespaces()),
        }),
        file: Some(File {
            path: exec.path.clone(),
            name,
            directory,
            size: exec.size,
            inode: exec.inode,
            device: exec.device,
            nlink: exec.nlink,
            mode: format!("{:o}", exec.mode & 0o7777),
            deleted: exec.is_deleted(),
            memfd: exec.is_memfd(),
            writable: exec.is_writable(),
            ctime: ctime(exec.ctime),
            path_truncated: exec.path_truncated,
            path_disconnected: exec.path_disconnected,
            hash,
            target,
        }),
        user: Some(User {
            id: exec.uid,
            name: user,
        }),
        container: container_id.map(|id| Container { id, runtime }),
        orchestrator: pod_uid
            .is_some()
            .then_some(Orchestrator { kind: "kubernetes" }),
        kubernetes: pod_uid.map(|uid| Kubernetes { pod: Pod { uid } }),
        lost: None,
        repeats: None,
        heartbeat: None,
        host: host.clone(),
        agent: agent.clone(),
        tinyexec: Tinyexec {
            schema_version: SCHEMA_VERSION,
            lost_since_previous: 0,
            ktime_ns: Some(exec.ktime_ns),
            read_error: Some(exec.read_error || exec.args_unreadable),
            content_source,
            kill_failed: exec.kill_failed,
            repeat_of: None,
        },
    }
}

pub fn lost_record(
    count: u64,
    total: u64,
    timestamp: String,
    host: &Host,
    agent: &Agent,
) -> Record {
    let mut rec = Record::metric("lost", timestamp, host, agent);
    rec.lost = Some(Lost { count, total });
    rec.tinyexec.lost_since_previous = count;
    rec
}

impl Record {
    /// A record about the sensor itself (`event.kind: "metric"`) with none of
    /// an exec's parts: the caller adds its own (`lost`, `heartbeat`).
    pub fn metric(action: &'static str, timestamp: String, host: &Host, agent: &Agent) -> Self {
        Self {
            timestamp,
            event: Event {
                action,
                kind: "metric",
                sequence: 0,
            },
            rule: None,
            exclusion: None,
            process: None,
            file: None,
            user: None,
            container: None,
            orchestrator: None,
            kubernetes: None,
            lost: None,
            repeats: None,
            heartbeat: None,
            host: host.clone(),
            agent: agent.clone(),
            tinyexec: Tinyexec {
                schema_version: SCHEMA_VERSION,
                ..Tinyexec::default()
            },
        }
    }
}

/// One record of every kind, with every optional field present in one of
/// them: what `field_names.rs` checks the schema against.
#[cfg(test)]
pub fn samples() -> Vec<Record> {
    use crate::exec::detect::{Source, Target, Verdict};
    let exec = Exec {
        ktime_ns: 1,
        pid: 2,
        exec_tid: 2,
        ppid: 1,
        uid: 0,
        gid: 0,
        euid: 0,
        egid: 0,
        login_uid: Some(1000),
        comm: "stager".into(),
        parent_comm: "sh".into(),
        args: vec!["/tmp/stager".into()],
        argc: 1,
        args_truncated: false,
        args_unreadable: false,
        path: "/tmp/stager".into(),
        path_bytes: b"/tmp/stager".to_vec(),
        path_truncated: false,
        path_disconnected: false,
        parent_path: Some("/bin/sh".into()),
        size: 153,
        inode: 7,
        device: 8,
        nlink: 1,
        mode: 0o100_755,
        candidate: true,
        header: None,
        read_error: false,
        killed: false,
        kill_failed: true,
        self_test_tgid: None,
        kernel_verdict: None,
        writers: -1,
        ctime: (0, 0),
        exec_path: Some("./stager".into()),
        exec_path_bytes: Some(b"./stager".to_vec()),
        exec_path_truncated: false,
        cgroup: Some(crate::exec::decode::Cgroup {
            id: 9,
            path: Some(format!(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0f1e2d3c_4b5a_6978_8796_a5b4c3d2e1f0.slice/cri-containerd-{}.scope",
                "a".repeat(64)
            )),
            truncated: false,
        }),
        namespaces: [1; 6],
        vpid: 1,
        parent_vpid: 0,
    };
    let host = Host {
        hostname: "h".into(),
        boot_id: "b".into(),
    };
    let agent = Agent {
        name: "tinyexec",
        version: "0",
        ephemeral_id: "e".into(),
    };
    let matched = |target| Verdict::Match {
        source: Source::Kernel,
        sha256: Some("0".repeat(64)),
        s1_offsets: vec![1],
        s2_offsets: vec![2],
        target,
    };
    let target = Target {
        path: "./stager".into(),
        size: 153,
        inode: 7,
        device: 8,
    };
    let verdicts = [
        matched(None),
        matched(Some(target)),
        Verdict::Undetermined { reason: "r".into() },
    ];
    let mut names = Names::default();
    let mut out: Vec<Record> = verdicts
        .iter()
        .map(|v| exec_record(&exec, Some(v), &mut names, "t".into(), &host, &agent))
        .collect();
    out[0].exclusion = Some(ExclusionRef {
        name: "x".into(),
        line: 1,
    });
    out.push(lost_record(1, 1, "t".into(), &host, &agent));
    // An aggregate of repeats, and a repeat as --all-execs records it.
    let mut aggregate = exec_record(
        &exec,
        Some(&verdicts[0]),
        &mut names,
        "t".into(),
        &host,
        &agent,
    );
    aggregate.repeats = Some(Repeats {
        count: 2,
        first_timestamp: "t".into(),
        of_sequence: 1,
        window_secs: 60,
    });
    out.push(aggregate);
    let mut repeat = exec_record(
        &exec,
        Some(&verdicts[0]),
        &mut names,
        "t".into(),
        &host,
        &agent,
    );
    repeat.tinyexec.repeat_of = Some(1);
    out.push(repeat);
    out.push(heartbeat_sample(&host, &agent));
    out
}

/// A heartbeat naming every output, Sentinel's own counters too.
#[cfg(test)]
fn heartbeat_sample(host: &Host, agent: &Agent) -> Record {
    use crate::record::heartbeat::{self, OutputHeartbeat, Snapshot};
    let mut rec = heartbeat::record(
        &Snapshot {
            interval_secs: 60,
            last: false,
            execs_seen: 1,
            kernel_lost: 0,
            counters: heartbeat::Counters::default(),
            outputs: &[],
        },
        "t".into(),
        host,
        agent,
    );
    let counts = |sentinel: bool| {
        Some(OutputHeartbeat {
            written: 1,
            failed: 0,
            dropped: 0,
            queued: 0,
            delivered: sentinel.then_some(1),
            rejected: sentinel.then_some(0),
            spool_dropped: sentinel.then_some(0),
        })
    };
    if let Some(h) = &mut rec.heartbeat {
        h.outputs = heartbeat::Outputs {
            stdout: counts(false),
            file: counts(false),
            syslog: counts(false),
            sentinel: counts(true),
        };
    }
    rec
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_say_host_only_when_all_are_known() {
        let host = [1, 2, 3, 4, 5, 6];
        let ns = namespaces(&host, Some(host)).unwrap();
        assert_eq!((ns.mnt, ns.cgroup, ns.host), (Some(1), Some(6), Some(true)));
        let mut other = host;
        other[2] = 9;
        assert_eq!(namespaces(&other, Some(host)).unwrap().host, Some(false));
        assert_eq!(namespaces(&host, None).unwrap().host, None);
        other[0] = 0;
        let partial = namespaces(&other, Some(host)).unwrap();
        assert_eq!((partial.mnt, partial.host), (None, None));
        assert!(namespaces(&[0; 6], Some(host)).is_none());
    }

    #[test]
    fn path_split() {
        assert_eq!(split_path("/usr/bin/ls"), ("/usr/bin".into(), "ls".into()));
        assert_eq!(split_path("/ls"), ("/".into(), "ls".into()));
        assert_eq!(split_path("/memfd:x"), ("/".into(), "memfd:x".into()));
    }
}
