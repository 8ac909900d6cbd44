//! The workload's names on a container's alert, from real runtimes started
//! here from a busybox rootfs built here (no registry is reachable): a
//! podman container and a Docker container from images imported from that
//! rootfs's tarball, and a containerd container carrying the annotations
//! Kubernetes' CRI plugin writes, in the `k8s.io` namespace under a
//! `kubepods` cgroup, standing in for a kubelet. An exclusion on
//! `container.image.name` suppresses its container's alert (barrier).
//!
//! The daemons (dockerd, containerd) are started when they are not running
//! and stopped after; podman needs none (`CONTAINERS_CONF` lifts its default
//! open-files limit, which exceeds this machine's hard limit).
#![expect(
    clippy::expect_used,
    reason = "a test's helpers panic with a message: that is the failure report"
)]

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Mutex, PoisonError},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use tinyexec_harness::{
    Sensor, TempDir,
    container::{self, podman, rootfs_tarball},
    field, field_str, stager, stdout_of, unique,
};

/// Where the stager lives inside each container.
const IN_CONTAINER: &str = "/tx-stager";
/// How long a daemon may take to answer after it was started.
const DAEMON_START: Duration = Duration::from_mins(1);

/// One runtime's command line at a time (imports and daemons are shared).
static RUNTIMES: Mutex<()> = Mutex::new(());

/// A daemon this test started (stopped on drop), or one already running.
struct Daemon {
    child: Option<Child>,
}

impl Daemon {
    /// Starts `cmd` unless `answers` already holds, then waits until it does.
    fn ensure(what: &str, answers: impl Fn() -> bool, cmd: &mut Command, log: &Path) -> Self {
        if answers() {
            return Self { child: None };
        }
        let log_file = fs::File::create(log).expect("the daemon's log");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log"))
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {what}: {e}"));
        let started = Instant::now();
        while !answers() {
            assert!(
                started.elapsed() < DAEMON_START,
                "{what} did not answer within {DAEMON_START:?}:\n{}",
                fs::read_to_string(log).unwrap_or_default()
            );
            thread::sleep(Duration::from_millis(200));
        }
        Self { child: Some(child) }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(child.id().cast_signed(), libc::SIGTERM) };
            let _ = child.wait();
        }
    }
}

/// A busybox rootfs with the stager, and its tarball for `import`.
fn image_rootfs(dir: &TempDir) -> (PathBuf, PathBuf) {
    rootfs_tarball(dir.path(), &[(IN_CONTAINER, &stager())])
}

/// The alert of the stager in container `id`.
fn alert_in(sensor: &Sensor, id: &str) -> Value {
    sensor.wait_for(&format!("the stager's alert in container {id}"), |v| {
        field(v, "event.kind") == "alert" && field(v, "container.id") == id
    })
}

#[test]
fn a_podman_containers_alert_names_the_container_and_its_image() {
    let _turn = RUNTIMES.lock().unwrap_or_else(PoisonError::into_inner);
    let dir = TempDir::new("podman");
    let (_, tar) = image_rootfs(&dir);
    let image = "localhost/tx-busybox:1";
    let image_id = stdout_of(podman().arg("import").arg(&tar).arg(image));
    let sensor = Sensor::start(["--no-exclusions"]);
    let name = unique("web");
    // Run to its end: the container has exited when its alert is made.
    stdout_of(
        podman()
            .args(["run", "--network", "none", "--name", &name, image])
            .arg(IN_CONTAINER),
    );
    let id = stdout_of(podman().args(["inspect", "--format", "{{.Id}}", &name]));
    let rec = alert_in(&sensor, &id);
    let _ = podman().args(["rm", "-f", &name]).output();
    assert_eq!(field(&rec, "container.runtime"), "podman", "{rec}");
    assert_eq!(field(&rec, "container.name"), name.as_str(), "{rec}");
    assert_eq!(
        field(&rec, "container.image.name"),
        "localhost/tx-busybox",
        "{rec}"
    );
    assert_eq!(field(&rec, "container.image.tag"), "1", "{rec}");
    assert_eq!(
        field(&rec, "container.image.hash.all")[0],
        image_id.as_str(),
        "{rec}"
    );
    assert!(
        field(&rec, "tinyexec.container_lookup_error").is_null(),
        "{rec}"
    );
}

#[test]
fn a_docker_containers_alert_names_the_container_and_its_image_after_it_exited() {
    let _turn = RUNTIMES.lock().unwrap_or_else(PoisonError::into_inner);
    let dir = TempDir::new("docker");
    let (_, tar) = image_rootfs(&dir);
    let docker = || Command::new("/usr/bin/docker");
    let _daemon = Daemon::ensure(
        "dockerd",
        || {
            docker()
                .arg("info")
                .output()
                .is_ok_and(|o| o.status.success())
        },
        // No registry, no network: no bridge and no iptables rules of its own.
        Command::new("dockerd").args(["--iptables=false", "--ip6tables=false", "--bridge=none"]),
        &dir.path().join("dockerd.log"),
    );
    let image_id = stdout_of(docker().arg("import").arg(&tar).arg("tx-busybox:1"));
    let sensor = Sensor::start(["--no-exclusions"]);
    let name = unique("web");
    let id = stdout_of(
        docker()
            .args([
                "run",
                "-d",
                "--network",
                "none",
                "--name",
                &name,
                "tx-busybox:1",
            ])
            .arg(IN_CONTAINER),
    );
    let rec = alert_in(&sensor, &id);
    let _ = docker().args(["rm", "-f", &name]).output();
    assert_eq!(field(&rec, "container.runtime"), "docker", "{rec}");
    assert_eq!(field(&rec, "container.name"), name.as_str(), "{rec}");
    assert_eq!(field(&rec, "container.image.name"), "tx-busybox", "{rec}");
    assert_eq!(field(&rec, "container.image.tag"), "1", "{rec}");
    assert_eq!(
        field(&rec, "container.image.hash.all")[0],
        image_id.as_str(),
        "{rec}"
    );
}

#[test]
fn a_cri_containerd_containers_alert_names_its_pod_namespace_and_image() {
    let _turn = RUNTIMES.lock().unwrap_or_else(PoisonError::into_inner);
    let dir = TempDir::new("containerd");
    let (root, _) = image_rootfs(&dir);
    let _daemon = Daemon::ensure(
        "containerd",
        || {
            Command::new("ctr")
                .arg("version")
                .output()
                .is_ok_and(|o| o.status.success())
        },
        &mut Command::new("containerd"),
        &dir.path().join("containerd.log"),
    );
    let seed = unique("cri");
    let id = container::container_id(&seed);
    let uid = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
    // The kubelet's cgroupfs driver's layout; the CRI plugin's annotations.
    let cgroup = format!("/kubepods/besteffort/pod{uid}/{id}");
    let annotations = [
        ("io.kubernetes.cri.container-type", "container"),
        ("io.kubernetes.cri.container-name", "web"),
        ("io.kubernetes.cri.sandbox-name", "payments-7d9f"),
        ("io.kubernetes.cri.sandbox-namespace", "prod"),
        ("io.kubernetes.cri.sandbox-uid", uid),
        (
            "io.kubernetes.cri.image-name",
            "registry.example/payments:1.2",
        ),
    ];
    let ctr = || {
        let mut c = Command::new("ctr");
        c.args(["--namespace", "k8s.io"]);
        c
    };
    let sensor = Sensor::start(["--no-exclusions"]);
    let mut run = ctr();
    run.args(["run", "-d", "--rootfs", "--cgroup", &cgroup]);
    for (k, v) in annotations {
        run.arg("--annotation").arg(format!("{k}={v}"));
    }
    // Alive until its alert came: containerd forgets a task's bundle when
    // the task is deleted.
    stdout_of(run.arg(&root).arg(&id).args([
        "/bin/sh",
        "-c",
        &format!("{IN_CONTAINER}; sleep 60"),
    ]));
    let rec = alert_in(&sensor, &id);
    let _ = ctr().args(["task", "kill", "-s", "KILL", &id]).output();
    for _ in 0..50 {
        if ctr()
            .args(["task", "rm", &id])
            .output()
            .is_ok_and(|o| o.status.success())
        {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    let _ = ctr().args(["container", "rm", &id]).output();
    for parent in fs::read_dir(container::hierarchy().parent().expect("cgroup fs root"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let _ = fs::remove_dir(parent.path().join(&cgroup[1..]));
    }
    assert_eq!(field(&rec, "container.runtime"), "containerd", "{rec}");
    assert_eq!(field(&rec, "container.name"), "web", "{rec}");
    assert_eq!(
        field(&rec, "container.image.name"),
        "registry.example/payments",
        "{rec}"
    );
    assert_eq!(field(&rec, "container.image.tag"), "1.2", "{rec}");
    assert_eq!(field(&rec, "kubernetes.pod.uid"), uid, "{rec}");
    assert_eq!(field(&rec, "kubernetes.pod.name"), "payments-7d9f", "{rec}");
    assert_eq!(field(&rec, "kubernetes.namespace"), "prod", "{rec}");
    assert_eq!(field(&rec, "kubernetes.container.name"), "web", "{rec}");
    assert_eq!(field_str(&rec, "orchestrator.type"), "kubernetes");
}

#[test]
fn an_exclusion_on_the_image_name_suppresses_its_containers_alert() {
    let _turn = RUNTIMES.lock().unwrap_or_else(PoisonError::into_inner);
    let dir = TempDir::new("image-exclusion");
    let (_, tar) = image_rootfs(&dir);
    let image = "localhost/tx-excluded:1";
    stdout_of(podman().arg("import").arg(&tar).arg(image));
    let exclusions = dir.path().join("exclusions.txt");
    fs::write(
        &exclusions,
        "# the test's image\ncontainer.image.name==\"localhost/tx-excluded\"\n",
    )
    .expect("exclusions");
    let sensor = Sensor::start([
        "--exclusions".as_ref(),
        exclusions.as_os_str(),
        "--suppressed".as_ref(),
        "emit".as_ref(),
    ]);
    let name = unique("excluded");
    // Run to its end, so that its exec came before the barrier's.
    stdout_of(
        podman()
            .args(["run", "--network", "none", "--name", &name, image])
            .arg(IN_CONTAINER),
    );
    let id = stdout_of(podman().args(["inspect", "--format", "{{.Id}}", &name]));
    let (_, before) = sensor.barrier();
    let _ = podman().args(["rm", "-f", &name]).output();
    let ours: Vec<&Value> = before
        .iter()
        .filter(|v| field(v, "container.id") == id.as_str())
        .collect();
    assert_eq!(
        ours.len(),
        1,
        "one record of the container's stager: {ours:#?}"
    );
    assert_eq!(field(ours[0], "event.kind"), "suppressed", "{}", ours[0]);
    assert_eq!(
        field(ours[0], "container.image.name"),
        "localhost/tx-excluded",
        "{}",
        ours[0]
    );
}
