//! One record of every kind, with every optional field present in one of
//! them: what `field_names.rs` checks the schema against.

use super::{
    Agent, ExclusionRef, Host, Record, Repeats,
    builder::{apply_workload, enrich, exec_record, heartbeat_record, lost_record},
    heartbeat::{Counters, Output, OutputHeartbeat, Snapshot},
};
use crate::exec::{
    container,
    decode::{Cgroup, Exec},
    detect::{Source, Target, Verdict},
    identity::Names,
    runtimes::{Found, Roots, Workloads},
};

/// What the CRI plugin's annotations say of the sample's container.
pub fn found() -> Found {
    Found {
        runtime: "containerd",
        name: Some("web".into()),
        image: Some("registry.example/payments:1.2".into()),
        image_digest: Some(format!("sha256:{}", "b".repeat(64))),
        pod_uid: Some("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0".into()),
        pod_name: Some("payments-7d9f".into()),
        pod_namespace: Some("prod".into()),
        kubernetes_container: Some("web".into()),
    }
}

/// An exec with every optional part present: a Kubernetes pod's, its login
/// user not root.
pub fn sample_exec() -> Exec {
    let cgroup = format!(
        "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0f1e2d3c_4b5a_6978_8796_a5b4c3d2e1f0.slice/cri-containerd-{}.scope",
        "a".repeat(64)
    );
    Exec {
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
        denied: false,
        self_test_tgid: None,
        kernel_verdict: None,
        writers: -1,
        ctime: (0, 0),
        exec_path: Some("./stager".into()),
        exec_path_bytes: Some(b"./stager".to_vec()),
        exec_path_truncated: false,
        workload: container::parse(&cgroup),
        cgroup: Some(Cgroup {
            id: 9,
            path: Some(cgroup),
            truncated: false,
        }),
        namespaces: [1; 6],
        vpid: 1,
        parent_vpid: 0,
    }
}

pub fn host_agent() -> (Host, Agent) {
    let host = Host {
        hostname: "h".into(),
        boot_id: "b".into(),
    };
    let agent = Agent {
        name: "tinyexec",
        version: "0",
        ephemeral_id: "e".into(),
    };
    (host, agent)
}

pub fn samples() -> Vec<Record> {
    let exec = sample_exec();
    let (host, agent) = host_agent();
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
    // Roots where no runtime keeps anything: the look-up finds nothing, and
    // the first record says so; the others carry what the CRI plugin says.
    let nowhere = std::env::temp_dir().join("tinyexec-samples-no-runtime");
    let workloads = Workloads::new(Roots {
        containerd_tasks: nowhere.join("containerd"),
        docker: nowhere.join("docker"),
        storage: nowhere.join("storage"),
        storage_run: nowhere.join("storage-run"),
    });
    let named = |v: &Verdict, names: &mut Names| {
        let mut rec = exec_record(&exec, Some(v), "t".into(), &host, &agent);
        enrich(&mut rec, &exec, names, &workloads);
        rec
    };
    let mut out: Vec<Record> = verdicts.iter().map(|v| named(v, &mut names)).collect();
    for rec in &mut out[1..] {
        rec.tinyexec.container_lookup_error = None;
        apply_workload(rec, Ok(found().into()));
    }
    out[0].exclusion = Some(ExclusionRef {
        name: "x".into(),
        line: 1,
    });
    out.push(lost_record(1, 1, "t".into(), &host, &agent));
    // An aggregate of repeats, and a repeat as --all-execs records it.
    let mut aggregate = named(&verdicts[0], &mut names);
    aggregate.repeats = Some(Repeats {
        count: 2,
        first_timestamp: "t".into(),
        of_sequence: 1,
        window_secs: 60,
    });
    out.push(aggregate);
    let mut repeat = named(&verdicts[0], &mut names);
    repeat.tinyexec.repeat_of = Some(1);
    out.push(repeat);
    out.push(heartbeat_sample(&host, &agent));
    out
}

/// A heartbeat naming every output, Sentinel's own counters too.
fn heartbeat_sample(host: &Host, agent: &Agent) -> Record {
    let counts = |sentinel: bool| OutputHeartbeat {
        written: 1,
        failed: 0,
        dropped: 0,
        queued: 0,
        delivered: sentinel.then_some(1),
        rejected: sentinel.then_some(0),
        spool_dropped: sentinel.then_some(0),
    };
    heartbeat_record(
        Snapshot {
            interval_secs: 60,
            last: false,
            execs_seen: 1,
            kernel_lost: 0,
            counters: Counters::default(),
            outputs: Output::ALL
                .into_iter()
                .map(|o| (o, counts(o == Output::Sentinel)))
                .collect(),
            prevent: Some((
                "kill",
                Some("bpf is not in /sys/kernel/security/lsm (lockdown,capability)".into()),
            )),
        },
        "t".into(),
        host,
        agent,
    )
}
