//! The JSON records tinyexec emits, one object per line. Field names are the
//! dotted names analysts query (ECS-style); docs/events.md documents each one.

use serde::Serialize;

use tinyexec_ebpf::rule;

use crate::{
    decode::Exec,
    detect::{Source, Verdict},
    heartbeat::Heartbeat,
    identity::Names,
    repeats::Repeats,
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
}

#[derive(Debug, Serialize)]
pub struct Process {
    pub pid: u32,
    /// The thread that called exec (differs from `pid` when a non-leader thread exec'd).
    pub exec_tid: u32,
    pub name: String,
    pub executable: String,
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
    /// The path walk stopped early: `path` is only its tail.
    pub path_truncated: bool,
    /// Not reachable from any mount root (memfd and other pseudo files).
    pub path_disconnected: bool,
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

/// Facts about the sensor's own view of the record.
#[derive(Debug, Default, Serialize)]
pub struct Sensor {
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
    /// `--all-execs`: this exec repeats the alert with this `event.sequence`
    /// within the repeat window, so it is not another alert (see `repeats`).
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
    pub lost: Option<Lost>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repeats: Option<Repeats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat: Option<Heartbeat>,
    pub host: Host,
    pub agent: Agent,
    pub tinyexec: Sensor,
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

fn rule_of(verdict: &Verdict) -> (Rule, Option<Hash>, &'static str) {
    match verdict {
        Verdict::Match {
            source,
            sha256,
            s1_offsets,
            s2_offsets,
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
        ),
    }
}

pub fn exec_record(
    exec: &Exec,
    verdict: Option<&Verdict>,
    names: &mut Names,
    timestamp: String,
    host: &Host,
    agent: &Agent,
) -> Record {
    let (rule, hash, content_source) = match verdict.map(rule_of) {
        Some((r, h, c)) => (Some(r), h, Some(c)),
        None => (None, None, None),
    };
    let user = name_or_id(names.user(exec.uid), exec.uid);
    let group = name_or_id(names.group(exec.gid), exec.gid);
    let effective_user = name_or_id(names.user(exec.euid), exec.euid);
    let login_user = exec.login_uid.map(|id| name_or_id(names.user(id), id));
    let (directory, name) = split_path(&exec.path);
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
            },
            parent_process_name: exec.parent_comm.clone(),
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
            path_truncated: exec.path_truncated,
            path_disconnected: exec.path_disconnected,
            hash,
        }),
        user: Some(User {
            id: exec.uid,
            name: user,
        }),
        lost: None,
        repeats: None,
        heartbeat: None,
        host: host.clone(),
        agent: agent.clone(),
        tinyexec: Sensor {
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
    Record {
        timestamp,
        event: Event {
            action: "lost",
            kind: "metric",
            sequence: 0,
        },
        rule: None,
        exclusion: None,
        process: None,
        file: None,
        user: None,
        lost: Some(Lost { count, total }),
        repeats: None,
        heartbeat: None,
        host: host.clone(),
        agent: agent.clone(),
        tinyexec: Sensor {
            schema_version: SCHEMA_VERSION,
            lost_since_previous: count,
            ..Sensor::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_split() {
        assert_eq!(split_path("/usr/bin/ls"), ("/usr/bin".into(), "ls".into()));
        assert_eq!(split_path("/ls"), ("/".into(), "ls".into()));
        assert_eq!(split_path("/memfd:x"), ("/".into(), "memfd:x".into()));
    }
}
