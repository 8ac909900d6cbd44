//! The Kubernetes `DaemonSet` (deploy/kubernetes/tinyexec.yaml) with the
//! image `cargo xtask image` builds (`$TINYEXEC_IMAGE`), on this machine's
//! podman (no kubelet can run here):
//!
//! - `podman kube play` takes the `DaemonSet`'s pod template as a `Pod`
//!   (podman plays pods, not daemon sets), with its `ConfigMap` and a
//!   `Secret`, and makes the container the template says (image, arguments,
//!   capabilities, read-only root, every volume);
//! - the same container run with what podman 4.3's `kube play` leaves out of
//!   the template (`hostPID`, upstream podman#17157, fixed in 4.5; and
//!   `seccompProfile`) reaches `ready`, its health probe says healthy, and an
//!   exec on the host and one in another container alert in the pod's log,
//!   the latter with its workload's names.
#![expect(
    clippy::expect_used,
    reason = "a test's helpers panic with a message: that is the failure report"
)]

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    sync::{Mutex, PoisonError},
    thread,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use tinyexec_harness::{
    TempDir,
    container::{podman, rootfs_tarball},
    event_timeout, output_text, ready_timeout, run_ok, stager, stdout_of, unique, yaml,
};

const MANIFEST: &str = "deploy/kubernetes/tinyexec.yaml";
/// The host directory the template's spool volume makes (`DirectoryOrCreate`).
const SPOOL: &str = "/var/lib/tinyexec";
/// The podman volume `kube play` makes for the template's `ConfigMap`.
const CONFIG_VOLUME: &str = "tinyexec-config";

/// The tests here take turns: they make the same host directory, volume and secret.
static TURNS: Mutex<()> = Mutex::new(());

/// What the pod template leaves on the host, removed again when the test
/// made it (tests/package.rs checks that nothing of the package's is left).
struct Traces {
    spool_was_there: bool,
    volume_was_there: bool,
}

impl Traces {
    fn note() -> Self {
        Self {
            spool_was_there: Path::new(SPOOL).exists(),
            volume_was_there: podman()
                .args(["volume", "exists", CONFIG_VOLUME])
                .status()
                .is_ok_and(|s| s.success()),
        }
    }
}

impl Drop for Traces {
    fn drop(&mut self) {
        if !self.volume_was_there {
            let _ = podman()
                .args(["volume", "rm", "--force", CONFIG_VOLUME])
                .output();
        }
        if !self.spool_was_there {
            let _ = fs::remove_dir_all(SPOOL);
        }
    }
}

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// The manifest's documents by kind.
fn manifest() -> (Value, Value) {
    let text = fs::read_to_string(repo(MANIFEST)).expect("the manifest");
    let docs = yaml::documents(&text, MANIFEST);
    let kind = |k: &str| {
        docs.iter()
            .find(|d| d["kind"] == k)
            .unwrap_or_else(|| panic!("{MANIFEST}: no {k}"))
            .clone()
    };
    (kind("DaemonSet"), kind("ConfigMap"))
}

/// `$TINYEXEC_IMAGE` (set by `cargo xtask test`) loaded into podman.
fn load_image() {
    let archive = std::env::var_os("TINYEXEC_IMAGE")
        .map(PathBuf::from)
        .expect(
            "$TINYEXEC_IMAGE: the image archive (`cargo xtask image`, run by `cargo xtask test`)",
        );
    stdout_of(podman().arg("load").arg("--input").arg(&archive));
}

#[test]
fn the_configmap_holds_the_default_exclusions() {
    let (_, config) = manifest();
    let shipped = fs::read_to_string(repo("config/exclusions.txt")).expect("defaults");
    assert_eq!(config["data"]["exclusions.txt"], shipped.as_str());
}

#[test]
fn podman_kube_play_makes_the_daemonsets_container() {
    let _turn = TURNS.lock().unwrap_or_else(PoisonError::into_inner);
    let _traces = Traces::note();
    let (ds, config) = manifest();
    load_image();
    let dir = TempDir::new("kube-play");
    let name = unique("pod");
    let template = &ds["spec"]["template"];
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": template["metadata"]["labels"]},
        "spec": template["spec"],
    });
    // YAML reads JSON.
    let pod_file = dir.path().join("pod.json");
    fs::write(&pod_file, pod.to_string()).expect("pod");
    let cm_file = dir.path().join("configmap.json");
    fs::write(&cm_file, config.to_string()).expect("configmap");
    // The Secret the template mounts: podman keeps a Secret's manifest as a podman secret.
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "tinyexec-sentinel"},
        "stringData": {"sentinel.toml": "# not used by the test\n"},
    });
    let secret_file = dir.path().join("secret.json");
    fs::write(&secret_file, secret.to_string()).expect("secret");
    let _ = podman()
        .args(["secret", "rm", "tinyexec-sentinel"])
        .output();
    stdout_of(
        podman()
            .args(["secret", "create", "tinyexec-sentinel"])
            .arg(&secret_file),
    );
    let played = podman()
        .args(["kube", "play", "--start=false", "--configmap"])
        .arg(&cm_file)
        .arg(&pod_file)
        .output()
        .expect("podman kube play");
    let container = format!("{name}-sensor");
    let inspect = podman()
        .args(["container", "inspect", &container])
        .output()
        .expect("podman container inspect");
    let _ = podman().args(["pod", "rm", "--force", &name]).output();
    let _ = podman()
        .args(["secret", "rm", "tinyexec-sentinel"])
        .output();
    assert!(played.status.success(), "{}", output_text(&played));
    assert!(inspect.status.success(), "{}", output_text(&inspect));
    let c: Value =
        serde_json::from_slice::<Vec<Value>>(&inspect.stdout).expect("inspect JSON")[0].clone();
    let spec = &template["spec"]["containers"][0];
    assert_eq!(c["ImageName"], spec["image"], "{c}");
    assert_eq!(c["Config"]["Cmd"], spec["args"], "{c}");
    let caps = c["EffectiveCaps"].as_array().expect("caps");
    for cap in spec["securityContext"]["capabilities"]["add"]
        .as_array()
        .expect("caps added")
    {
        let cap = format!("CAP_{}", cap.as_str().expect("cap"));
        // podman drops what this machine's bounding set lacks (SYS_RESOURCE here).
        if cap != "CAP_SYS_RESOURCE" {
            assert!(caps.contains(&json!(cap)), "{cap} not in {caps:?}");
        }
    }
    assert_eq!(c["HostConfig"]["ReadonlyRootfs"], true, "{c}");
    let mounted: Vec<&str> = c["Mounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .filter_map(|m| m["Destination"].as_str())
        .collect();
    let volumes = template["spec"]["volumes"].as_array().expect("volumes");
    for m in spec["volumeMounts"].as_array().expect("volumeMounts") {
        let path = m["mountPath"].as_str().expect("mountPath");
        let secret = volumes
            .iter()
            .any(|v| v["name"] == m["name"] && v.get("secret").is_some());
        // podman 4.3 resolves a Secret's volume (the play fails without the
        // secret) but its inspect does not list it among the mounts.
        if !secret {
            assert!(mounted.contains(&path), "{path} not mounted: {mounted:?}");
        }
    }
}

/// `podman run` arguments for the template's container, with the parts of
/// the template podman 4.3's `kube play` ignores.
fn run_args(template: &Value, config: &Value, dir: &Path) -> Vec<String> {
    let spec = &template["spec"];
    let c = &spec["containers"][0];
    let sc = &c["securityContext"];
    let mut a: Vec<String> = vec!["run".into(), "--detach".into()];
    if spec["hostPID"] == true {
        a.push("--pid=host".into());
    }
    if sc["seccompProfile"]["type"] == "Unconfined" {
        a.push("--security-opt=seccomp=unconfined".into());
    }
    if sc["allowPrivilegeEscalation"] == false {
        a.push("--security-opt=no-new-privileges".into());
    }
    if sc["readOnlyRootFilesystem"] == true {
        a.push("--read-only".into());
    }
    for cap in sc["capabilities"]["drop"].as_array().into_iter().flatten() {
        a.push(format!("--cap-drop={}", cap.as_str().expect("cap")));
    }
    for cap in sc["capabilities"]["add"].as_array().into_iter().flatten() {
        a.push(format!("--cap-add={}", cap.as_str().expect("cap")));
    }
    a.push(format!("--user={}", sc["runAsUser"].as_i64().unwrap_or(0)));
    for e in c["env"].as_array().into_iter().flatten() {
        a.push(format!(
            "--env={}={}",
            e["name"].as_str().expect("env name"),
            e["value"].as_str().expect("env value")
        ));
    }
    let volumes = spec["volumes"].as_array().expect("volumes");
    for m in c["volumeMounts"].as_array().expect("volumeMounts") {
        let name = m["name"].as_str().expect("volume name");
        let at = m["mountPath"].as_str().expect("mountPath");
        let ro = if m["readOnly"] == true { ":ro" } else { "" };
        let v = volumes
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no volume {name}"));
        if let Some(path) = v["hostPath"]["path"].as_str() {
            if v["hostPath"]["type"] == "DirectoryOrCreate" {
                fs::create_dir_all(path).expect("hostPath");
            }
            if Path::new(path).exists() {
                a.push(format!("--volume={path}:{at}{ro}"));
            }
        } else if v.get("emptyDir").is_some() {
            a.push(format!("--tmpfs={at}:rw,exec"));
        } else if let Some(cm) = v["configMap"]["name"].as_str() {
            assert_eq!(config["metadata"]["name"], cm);
            let files = dir.join(name);
            fs::create_dir_all(&files).expect("configmap dir");
            for (k, text) in config["data"].as_object().expect("data") {
                fs::write(files.join(k), text.as_str().expect("text")).expect("configmap file");
            }
            a.push(format!("--volume={}:{at}{ro}", files.display()));
        } else if v.get("secret").is_some() {
            // The optional Secret, absent: Sentinel is not configured.
            assert_eq!(v["secret"]["optional"], true, "{v}");
        } else {
            panic!("a volume of a kind this test does not know: {v}");
        }
    }
    a.push(c["image"].as_str().expect("image").into());
    a.extend(
        c["args"]
            .as_array()
            .expect("args")
            .iter()
            .map(|s| s.as_str().expect("arg").to_owned()),
    );
    a
}

/// The pod's log as JSON records (its other lines are the sensor's log).
fn records(id: &str) -> (Vec<Value>, String) {
    let out = podman().args(["logs", id]).output().expect("podman logs");
    let records = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect();
    (records, output_text(&out))
}

fn wait_record(id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let (recs, log) = records(id);
        if let Some(r) = recs.into_iter().find(&pred) {
            return r;
        }
        assert!(
            start.elapsed() < event_timeout(),
            "{what}: not in the pod's log within {:?}:\n{log}",
            event_timeout()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_daemonsets_container_runs_ready_and_alerts_on_the_host_and_in_containers() {
    let _turn = TURNS.lock().unwrap_or_else(PoisonError::into_inner);
    let _traces = Traces::note();
    let (ds, config) = manifest();
    load_image();
    let dir = TempDir::new("daemonset");
    let args = run_args(&ds["spec"]["template"], &config, dir.path());
    let name = unique("sensor");
    let id = stdout_of(
        podman()
            .arg(&args[0])
            .arg(format!("--name={name}"))
            .args(&args[1..]),
    );
    let cleanup = || {
        let _ = podman().args(["rm", "--force", &id]).output();
    };
    let start = Instant::now();
    loop {
        let (_, log) = records(&id);
        if log.contains("ready: ") {
            break;
        }
        if start.elapsed() > ready_timeout() || log.contains("error:") {
            cleanup();
            panic!("the pod's sensor did not become ready:\n{log}");
        }
        thread::sleep(Duration::from_millis(200));
    }
    let probe =
        &ds["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["exec"]["command"];
    let health = podman()
        .args(["exec", &id])
        .args(
            probe
                .as_array()
                .expect("probe")
                .iter()
                .map(|s| s.as_str().expect("arg")),
        )
        .output()
        .expect("podman exec");
    // On the host.
    let host_dir = TempDir::new("daemonset-host");
    let path = host_dir.exe(&unique("stager"), &stager());
    run_ok(&mut Command::new(&path));
    let host = wait_record(&id, "the host exec's alert", |v| {
        v["event"]["kind"] == "alert" && v["file"]["path"] == path.to_str().expect("UTF-8")
    });
    // In another container, from an image imported here.
    let image_dir = TempDir::new("daemonset-image");
    let (_, tar) = rootfs_tarball(image_dir.path(), &[("/tx-stager", &stager())]);
    stdout_of(
        podman()
            .arg("import")
            .arg(&tar)
            .arg("localhost/tx-workload:2"),
    );
    let workload = unique("workload");
    stdout_of(
        podman()
            .args(["run", "--network=none", &format!("--name={workload}")])
            .args(["localhost/tx-workload:2", "/tx-stager"]),
    );
    let in_container = wait_record(&id, "the container exec's alert", |v| {
        v["event"]["kind"] == "alert" && v["container"]["name"] == workload.as_str()
    });
    let _ = podman().args(["rm", "--force", &workload]).output();
    cleanup();
    assert!(
        health.status.success(),
        "the probe: {}",
        output_text(&health)
    );
    assert!(host.get("container").is_none(), "{host}");
    assert_eq!(
        in_container["container"]["runtime"], "podman",
        "{in_container}"
    );
    assert_eq!(
        in_container["container"]["image"]["name"], "localhost/tx-workload",
        "{in_container}"
    );
    assert_eq!(
        in_container["container"]["image"]["tag"], "2",
        "{in_container}"
    );
}
