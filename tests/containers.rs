//! Container context on records, with real parts: a container run by a real
//! OCI runtime (runc, from Debian) from a busybox rootfs built here, a
//! Kubernetes-style cgroup made by the test, and an exec on the host; an
//! exclusion on `container.id` applied to both.
#![expect(
    clippy::expect_used,
    reason = "a test's helpers panic with a message: that is the failure report"
)]

use std::{
    fs,
    io::{BufRead as _, BufReader},
    net::UdpSocket,
    os::unix::{ffi::OsStrExt as _, fs::MetadataExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::{Mutex, PoisonError},
};

use serde_json::Value;
use tinyexec_harness::{
    Sensor, TempDir,
    container::{self, NAMESPACES, PodCgroup},
    exec_of, field, field_str, field_u64, sensor_path, spawn, stager, unique,
};

/// runc creates `/docker` in each hierarchy and leaves it; the tests that
/// run it take turns, so one's clean-up never races the other's start.
static RUNC: Mutex<()> = Mutex::new(());

/// A container running under runc: its script has reported its namespaces
/// and the stager's pid, and it waits on stdin until [`Running::stop`].
struct Running {
    child: Child,
    stdin: Option<ChildStdin>,
    id: String,
    /// Namespace inode numbers as the container's shell saw them.
    namespaces: [u64; 6],
    /// The stager's pid inside the container.
    vpid: u64,
    /// The stager's path on the host (in the bundle's rootfs).
    host_path: PathBuf,
    _bundle: TempDir,
}

/// Where the stager lives inside the container's root.
const IN_CONTAINER: &str = "/tx-stager";

impl Running {
    fn start(tag: &str) -> Self {
        Self::start_with_id(tag, container::container_id(&unique(tag)))
    }

    fn start_with_id(tag: &str, id: String) -> Self {
        let bundle = TempDir::new(tag);
        let script = format!(
            "for n in {}; do echo \"ns $n $(readlink /proc/self/ns/$n)\"; done; \
             {IN_CONTAINER} & echo \"vpid $!\"; wait $!; echo \"done $?\"; read line || true",
            NAMESPACES.join(" ")
        );
        container::oci_bundle(bundle.path(), &id, &[(IN_CONTAINER, &stager())], &script);
        // A short name for runc's state; the cgroup carries the full id.
        let name = format!("tx-{}", &id[..16]);
        let mut child = spawn(
            Command::new("runc")
                .args(["run", "--bundle"])
                .arg(bundle.path())
                .arg(&name)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped()),
        );
        let stdin = child.stdin.take();
        let out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut namespaces = [0u64; 6];
        let mut vpid = None;
        for line in out.lines() {
            let line = line.expect("the container's output");
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["ns", name, link] => {
                    let i = NAMESPACES
                        .iter()
                        .position(|n| n == name)
                        .expect("a namespace");
                    namespaces[i] = link
                        .trim_start_matches(|c: char| !c.is_ascii_digit())
                        .trim_end_matches(']')
                        .parse()
                        .unwrap_or_else(|e| panic!("{line}: {e}"));
                }
                ["vpid", n] => vpid = Some(n.parse().expect("vpid")),
                ["done", status] => {
                    assert_eq!(*status, "0", "the stager in the container failed");
                    break;
                }
                _ => panic!("unexpected output from the container: {line}"),
            }
        }
        let host_path = bundle.path().join("rootfs").join(&IN_CONTAINER[1..]);
        Self {
            child,
            stdin,
            id,
            namespaces,
            vpid: vpid.expect("the container reported the stager's pid"),
            host_path,
            _bundle: bundle,
        }
    }

    /// The container's cgroup directory (it exists while the container runs).
    fn cgroup_dir(&self) -> PathBuf {
        container::hierarchy().join("docker").join(&self.id)
    }

    fn stop(mut self) {
        drop(self.stdin.take());
        let status = self.child.wait().expect("wait for runc");
        assert!(status.success(), "runc run: {status}");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
        // runc removes the container's cgroups, not the `/docker` it made.
        for parent in fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            let _ = fs::remove_dir(parent.path().join("docker"));
        }
        let _ = fs::remove_dir("/sys/fs/cgroup/docker");
    }
}

/// An alert of the container's stager.
fn in_container(id: &str) -> impl Fn(&Value) -> bool + '_ {
    move |v| field(v, "file.path") == IN_CONTAINER && field(v, "container.id").as_str() == Some(id)
}

fn host_namespaces() -> [u64; 6] {
    container::namespaces_of("self", false)
}

fn namespaces_in(rec: &Value) -> [u64; 6] {
    NAMESPACES.map(|n| field_u64(rec, &format!("process.namespaces.{n}")))
}

#[test]
fn a_runc_container_alerts_with_its_id_pids_namespaces_and_inner_path() {
    let _turn = RUNC.lock().unwrap_or_else(PoisonError::into_inner);
    // CEF too, to a socket of ours.
    let syslog = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket");
    syslog
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout");
    let url = format!("udp://{}", syslog.local_addr().expect("address"));
    let sensor = Sensor::start(["--no-exclusions", "--syslog", &url]);
    let c = Running::start("runc");
    let rec = sensor.wait_for("the container's alert", in_container(&c.id));
    let cef = cef_with(&syslog, &c.id);
    let cgroup_id = fs::metadata(c.cgroup_dir())
        .unwrap_or_else(|e| panic!("{}: {e}", c.cgroup_dir().display()))
        .ino();
    let md = fs::metadata(&c.host_path).expect("the stager in the rootfs");
    let (id, host_path, vpid, seen) = (c.id.clone(), c.host_path.clone(), c.vpid, c.namespaces);
    c.stop();
    eprintln!("the container's alert: {rec}");
    assert_eq!(field_str(&rec, "event.kind"), "alert", "{rec}");
    assert_eq!(field_str(&rec, "container.id"), id, "{rec}");
    assert_eq!(field_str(&rec, "container.runtime"), "docker", "{rec}");
    assert!(
        rec.get("kubernetes").is_none() && rec.get("orchestrator").is_none(),
        "{rec}"
    );
    // The path as the process saw it, and what locates the file from the host.
    assert_eq!(field_str(&rec, "file.path"), IN_CONTAINER, "{rec}");
    assert_eq!(field_u64(&rec, "file.inode"), md.ino(), "{rec}");
    assert_eq!(
        field_u64(&rec, "file.device"),
        md.dev(),
        "{}",
        host_path.display()
    );
    // Its pid in the container (the shell is 1) and the host's.
    assert_eq!(field_u64(&rec, "process.vpid"), vpid, "{rec}");
    assert_eq!(field_u64(&rec, "process.parent.vpid"), 1, "{rec}");
    assert_ne!(field_u64(&rec, "process.pid"), vpid, "{rec}");
    // The namespaces the container's shell saw; all but the user namespace
    // (runc made none) differ from the host's.
    assert_eq!(namespaces_in(&rec), seen, "{rec}");
    let host = host_namespaces();
    for (i, name) in NAMESPACES.iter().enumerate() {
        if *name == "user" {
            assert_eq!(seen[i], host[i], "user namespace");
        } else {
            assert_ne!(seen[i], host[i], "{name} namespace is the host's: {rec}");
        }
    }
    assert_eq!(field(&rec, "process.namespaces.host"), false, "{rec}");
    assert_eq!(
        field_str(&rec, "process.cgroup.path"),
        format!("/docker/{id}"),
        "{rec}"
    );
    assert_eq!(field_u64(&rec, "process.cgroup.id"), cgroup_id, "{rec}");
    assert_eq!(field(&rec, "process.cgroup.path_truncated"), false, "{rec}");
    // CEF: the container id, the pid inside and the namespaces' verdict,
    // in keys of Microsoft's CommonSecurityLog mapping.
    eprintln!("the container's alert in CEF: {cef}");
    let (_, ext) = tinyexec_harness::cef::parse(&cef);
    assert_eq!(ext["deviceExternalId"], id, "{cef}");
    assert_eq!(
        (ext["cn2Label"].as_str(), ext["cn2"].clone()),
        ("processVpid", vpid.to_string())
    );
    assert_eq!(
        (ext["cn3Label"].as_str(), ext["cn3"].as_str()),
        ("hostNamespaces", "0")
    );
    let ws: Value = serde_json::from_str(
        &fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("kusto/workspace.json"))
            .expect("tests/kusto/workspace.json"),
    )
    .expect("JSON");
    for key in ext.keys() {
        assert!(
            ws["cef_mapping"]["keys"][key.as_str()].is_string(),
            "CEF key `{key}` is not in Microsoft's mapping: {cef}"
        );
    }
}

/// The CEF datagram that names `id`.
fn cef_with(socket: &UdpSocket, id: &str) -> String {
    let mut buf = vec![0u8; 65536];
    loop {
        let n = socket
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no CEF record of container {id}: {e}"));
        let line = String::from_utf8_lossy(&buf[..n]).into_owned();
        if line.contains(id) {
            return line;
        }
    }
}

/// Moves the process into `procs` before it execs (async-signal-safe: open,
/// write, close on a path made before the fork).
fn into_cgroup(cmd: &mut Command, procs: &Path) {
    let path = std::ffi::CString::new(procs.as_os_str().as_bytes()).expect("no NUL");
    // SAFETY: only open/write/close between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(path.as_ptr(), libc::O_WRONLY);
            if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
            libc::close(fd);
            Ok(())
        });
    }
}

#[test]
fn a_kubernetes_pod_cgroup_gives_pod_uid_and_container_id() {
    let sensor = Sensor::start(["--no-exclusions"]);
    let dir = TempDir::new("pod");
    let pod = PodCgroup::new("besteffort", &unique("pod"));
    let path = dir.exe(&unique("stager"), &stager());
    let mut cmd = Command::new(&path);
    into_cgroup(&mut cmd, &pod.cgroup.procs());
    let mut child = spawn(&mut cmd);
    let pid = child.id();
    assert!(child.wait().expect("wait").success());
    let rec = sensor.wait_for("the pod's alert", exec_of(&path));
    pod.assert_in(&rec);
    // Only its cgroup was made to look like a pod's: its namespaces are the host's.
    assert_eq!(namespaces_in(&rec), host_namespaces(), "{rec}");
    assert_eq!(field(&rec, "process.namespaces.host"), true, "{rec}");
    assert_eq!(field_u64(&rec, "process.vpid"), u64::from(pid), "{rec}");
}

#[test]
fn a_host_exec_has_no_container_fields_and_the_hosts_namespaces() {
    let sensor = Sensor::start(["--no-exclusions"]);
    let dir = TempDir::new("host");
    let path = dir.exe(&unique("stager"), &stager());
    let mut child = spawn(&mut Command::new(&path));
    let pid = child.id();
    assert!(child.wait().expect("wait").success());
    let rec = sensor.wait_for("the host's alert", exec_of(&path));
    for absent in ["container", "kubernetes", "orchestrator"] {
        assert!(
            rec.get(absent).is_none(),
            "`{absent}` in a host exec's record: {rec}"
        );
    }
    assert_eq!(namespaces_in(&rec), host_namespaces(), "{rec}");
    assert_eq!(field(&rec, "process.namespaces.host"), true, "{rec}");
    assert_eq!(field_u64(&rec, "process.vpid"), u64::from(pid), "{rec}");
    assert_eq!(
        field_u64(&rec, "process.parent.vpid"),
        u64::from(std::process::id()),
        "{rec}"
    );
    let own = container::own_cgroup();
    assert_eq!(field_str(&rec, "process.cgroup.path"), own, "{rec}");
    let dir = container::hierarchy().join(own.trim_start_matches('/'));
    assert_eq!(
        field_u64(&rec, "process.cgroup.id"),
        fs::metadata(&dir).expect("own cgroup").ino(),
        "{rec}"
    );
}

#[test]
fn an_exclusion_on_container_id_suppresses_the_containers_alert_only() {
    let _turn = RUNC.lock().unwrap_or_else(PoisonError::into_inner);
    let dir = TempDir::new("exclude-container");
    // The id is known before the container runs: the test chooses it.
    let tag = unique("excluded");
    let id = container::container_id(&tag);
    let exclusions = dir.path().join("exclusions.txt");
    fs::write(
        &exclusions,
        format!("# Our build container\ncontainer.id:\"{id}\"\n"),
    )
    .expect("write exclusions");
    let sensor = Sensor::start_with(
        Command::new(sensor_path())
            .args(["run", "--exclusions"])
            .arg(&exclusions),
    );
    let c = Running::start_with_id(&tag, id.clone());
    c.stop();
    let host = dir.exe(&unique("host-stager"), &stager());
    let status = spawn(&mut Command::new(&host)).wait().expect("wait");
    assert!(status.success());
    let before = sensor.records_before_barrier();
    let container: Vec<&Value> = before.iter().filter(|v| in_container(&id)(v)).collect();
    assert_eq!(container.len(), 1, "the container's records: {container:?}");
    assert_eq!(
        field_str(container[0], "event.kind"),
        "suppressed",
        "{}",
        container[0]
    );
    assert_eq!(
        field_str(container[0], "exclusion.name"),
        "Our build container",
        "{}",
        container[0]
    );
    let host_alerts: Vec<&Value> = before.iter().filter(|v| exec_of(&host)(v)).collect();
    assert_eq!(host_alerts.len(), 1, "{host_alerts:?}");
    assert_eq!(
        field_str(host_alerts[0], "event.kind"),
        "alert",
        "{}",
        host_alerts[0]
    );
    assert!(
        host_alerts[0].get("container").is_none(),
        "{}",
        host_alerts[0]
    );
    // `check` says who controls the field the exclusion rests on.
    let out = Command::new(sensor_path())
        .arg("check")
        .arg(&exclusions)
        .output()
        .expect("tinyexec-sensor check");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("create cgroups") && text.contains("process.cgroup.path=="),
        "{text}"
    );
}
