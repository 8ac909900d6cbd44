//! Records made: an exec's (with the names and the container its ids and
//! cgroup stand for), a loss's, a heartbeat's.

use tinyexec_ebpf::rule;

use super::{
    Action, Agent, Cgroup, Container, Event, File, Hash, Host, Image, ImageHash, Kind, Kubernetes,
    KubernetesContainer, Lost, Namespaces, Orchestrator, Parent, Pod, Process, Record, Rule,
    RuleString, SCHEMA_VERSION, TargetFile, Tinyexec, User,
    heartbeat::{Heartbeat, Snapshot},
};
use crate::exec::{
    clock::rfc3339,
    container::{self, Workload},
    decode::Exec,
    detect::{Source, Target, Verdict},
    identity::Names,
    runtimes::{self, Workloads},
};

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

/// An exec's record without the names of its users, group and workload:
/// [`enrich`] adds them (a name may take a look-up), to the records that
/// will be emitted.
pub fn exec_record(
    exec: &Exec,
    verdict: Option<&Verdict>,
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
    let (directory, name) = split_path(&exec.path);
    let Workload {
        container_id,
        runtime,
        pod_uid,
    } = exec.workload.clone();
    let vpid = (exec.vpid != 0).then_some(exec.vpid);
    Record {
        timestamp,
        event: Event {
            action: if exec.denied {
                Action::Denied
            } else if exec.killed {
                Action::Killed
            } else {
                Action::Exec
            },
            kind: if rule.is_some() {
                Kind::Alert
            } else {
                Kind::Event
            },
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
            user: String::new(),
            group: String::new(),
            effective_user: String::new(),
            login_uid: exec.login_uid,
            login_user: None,
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
            name: String::new(),
        }),
        container: container_id.map(|id| Container {
            // A machine's name is its id (systemd-nspawn).
            name: (runtime == Some("systemd-nspawn")).then(|| id.clone()),
            id,
            runtime,
            image: None,
        }),
        orchestrator: pod_uid
            .is_some()
            .then_some(Orchestrator { kind: "kubernetes" }),
        kubernetes: pod_uid.map(|uid| Kubernetes {
            namespace: None,
            pod: Pod { uid, name: None },
            container: None,
        }),
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
            container_lookup_error: None,
        },
    }
}

/// The fields [`enrich`] fills: an exclusion that reads one needs them
/// before it is evaluated.
pub const ENRICHED_FIELDS: &[&str] = &[
    "process.user",
    "process.group",
    "process.effective_user",
    "process.login_user",
    "user.name",
    "container.runtime",
    "container.name",
    "container.image.name",
    "container.image.tag",
    "container.image.hash.all",
    "orchestrator.type",
    "kubernetes.namespace",
    "kubernetes.pod.name",
    "kubernetes.container.name",
    "tinyexec.container_lookup_error",
];

/// What the record of `exec` gets from outside the kernel's record: the
/// names of its users and group (NSS) and of its container, image and pod
/// (the container runtime's state). Each may wait a moment for an answer
/// never asked for before.
pub fn enrich(rec: &mut Record, exec: &Exec, names: &mut Names, workloads: &Workloads) {
    add_names(rec, exec, names);
    add_workload(rec, workloads);
}

/// The container's names from its runtime's state, or why there are none.
fn add_workload(rec: &mut Record, workloads: &Workloads) {
    let Some(c) = rec.container.as_mut() else {
        return;
    };
    if c.runtime == Some("systemd-nspawn") {
        return;
    }
    let answer = workloads.get(&c.id, c.runtime);
    apply_workload(rec, answer);
}

/// A look-up's answer into the record of a container's exec.
pub(crate) fn apply_workload(rec: &mut Record, answer: runtimes::Answer) {
    let Some(c) = rec.container.as_mut() else {
        return;
    };
    let found = match answer {
        Ok(found) => found,
        Err(why) => {
            rec.tinyexec.container_lookup_error = Some(why);
            return;
        }
    };
    c.runtime = c.runtime.or(Some(found.runtime));
    c.name.clone_from(&found.name);
    c.image = found.image.as_deref().map(|image| {
        let (name, tag) = runtimes::image_name_tag(image);
        Image {
            name,
            tag,
            hash: found
                .image_digest
                .clone()
                .map(|d| ImageHash { all: vec![d] }),
        }
    });
    // A pod's names go with its uid: from the cgroup, else from the runtime.
    let k = match (&mut rec.kubernetes, &found.pod_uid) {
        (Some(k), _) => k,
        (None, Some(uid)) => rec.kubernetes.insert(Kubernetes {
            namespace: None,
            pod: Pod {
                uid: uid.clone(),
                name: None,
            },
            container: None,
        }),
        (None, None) => return,
    };
    k.namespace.clone_from(&found.pod_namespace);
    k.pod.name.clone_from(&found.pod_name);
    k.container = found
        .kubernetes_container
        .clone()
        .map(|name| KubernetesContainer { name });
    rec.orchestrator = Some(Orchestrator { kind: "kubernetes" });
}

/// Names the users and group of `exec`'s record (the number stays where the
/// name service has no name).
fn add_names(rec: &mut Record, exec: &Exec, names: &mut Names) {
    let user = name_or_id(names.user(exec.uid), exec.uid);
    if let Some(p) = rec.process.as_mut() {
        p.user.clone_from(&user);
        p.group = name_or_id(names.group(exec.gid), exec.gid);
        p.effective_user = name_or_id(names.user(exec.euid), exec.euid);
        p.login_user = exec.login_uid.map(|id| name_or_id(names.user(id), id));
    }
    if let Some(u) = rec.user.as_mut() {
        u.name = user;
    }
}

pub fn lost_record(
    count: u64,
    total: u64,
    timestamp: String,
    host: &Host,
    agent: &Agent,
) -> Record {
    let mut rec = Record::metric(Action::Lost, timestamp, host, agent);
    rec.lost = Some(Lost { count, total });
    rec.tinyexec.lost_since_previous = count;
    rec
}

impl Record {
    /// A record about the sensor itself (`event.kind: "metric"`) with none of
    /// an exec's parts: the caller adds its own (`lost`, `heartbeat`).
    pub fn metric(action: Action, timestamp: String, host: &Host, agent: &Agent) -> Self {
        Self {
            timestamp,
            event: Event {
                action,
                kind: Kind::Metric,
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

pub fn heartbeat_record(s: Snapshot, timestamp: String, host: &Host, agent: &Agent) -> Record {
    let mut rec = Record::metric(Action::Heartbeat, timestamp, host, agent);
    rec.heartbeat = Some(Heartbeat {
        interval_secs: s.interval_secs,
        last: s.last,
        execs_seen: s.execs_seen,
        records_read: s.counters.records_read,
        alerts: s.counters.alerts,
        suppressed: s.counters.suppressed,
        repeats: s.counters.repeats,
        kernel_lost: s.kernel_lost,
        prevent: s.prevent.as_ref().map(|(m, _)| *m),
        prevent_reason: s.prevent.and_then(|(_, why)| why),
        outputs: s.outputs,
    });
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

    /// Leaves of a JSON value by dotted path.
    fn leaves(v: &serde_json::Value, prefix: &str, out: &mut Vec<(String, String)>) {
        match v.as_object() {
            Some(obj) => obj
                .iter()
                .for_each(|(k, v)| leaves(v, &format!("{prefix}{k}."), out)),
            None => out.push((prefix.trim_end_matches('.').to_owned(), v.to_string())),
        }
    }

    #[test]
    fn enrich_fills_the_enriched_fields_and_only_them() {
        let exec = crate::record::samples::sample_exec();
        let (host, agent) = crate::record::samples::host_agent();
        let mut rec = exec_record(&exec, None, "t".into(), &host, &agent);
        let by_number = serde_json::to_value(&rec).unwrap();
        add_names(&mut rec, &exec, &mut Names::new());
        apply_workload(&mut rec, Ok(crate::record::samples::found().into()));
        let named = serde_json::to_value(&rec).unwrap();
        let (mut before, mut after) = (Vec::new(), Vec::new());
        leaves(&by_number, "", &mut before);
        leaves(&named, "", &mut after);
        let changed: Vec<&str> = after
            .iter()
            .filter(|leaf| !before.contains(leaf))
            .map(|(path, _)| path.as_str())
            .collect();
        // Empty before: the names (or the numbers where there is none) come now.
        assert!(changed.contains(&"process.user"), "{changed:?}");
        assert!(changed.contains(&"container.image.name"), "{changed:?}");
        for path in &changed {
            assert!(ENRICHED_FIELDS.contains(path), "{path} changed by enrich");
        }
    }

    #[test]
    fn path_split() {
        assert_eq!(split_path("/usr/bin/ls"), ("/usr/bin".into(), "ls".into()));
        assert_eq!(split_path("/ls"), ("/".into(), "ls".into()));
        assert_eq!(split_path("/memfd:x"), ("/".into(), "memfd:x".into()));
    }
}
