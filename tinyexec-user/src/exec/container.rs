//! The container and pod an exec ran in, read from its cgroup path the way
//! each runtime names its cgroups, and whether its namespaces are the host's.
//!
//! Written here rather than taken from a crate: the layouts are a handful of
//! string patterns, and the crates that know them pull in runtime clients.

use std::{fs, os::unix::fs::MetadataExt as _, sync::OnceLock};

/// Namespace inode numbers, in the order of [`NAMES`].
pub type Namespaces = [u32; 6];
/// The namespaces a record carries, as `/proc/PID/ns/` names them.
pub const NAMES: [&str; 6] = ["mnt", "pid", "net", "user", "uts", "cgroup"];

/// What a cgroup path says about the workload.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Workload {
    pub container_id: Option<String>,
    /// `docker`, `containerd`, `cri-o`, `podman`, `systemd-nspawn`; None when
    /// the layout does not say (Kubernetes with the cgroupfs driver).
    pub runtime: Option<&'static str>,
    pub pod_uid: Option<String>,
}

/// Runtimes that name a container's cgroup `PREFIX<64 hex>` (a systemd scope
/// with `.scope`, or the same name under the cgroupfs driver).
const PREFIXES: [(&str, &str); 4] = [
    ("docker-", "docker"),
    ("cri-containerd-", "containerd"),
    ("crio-", "cri-o"),
    ("libpod-", "podman"),
];

/// Reads the container and pod from a cgroup path; the innermost container
/// wins (a container inside a pod, or a container in a container).
pub fn parse(path: &str) -> Workload {
    let mut w = Workload::default();
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    for (i, part) in parts.iter().enumerate() {
        let previous = i.checked_sub(1).map(|j| parts[j]);
        let under_kubepods = parts[..i].iter().any(|p| p.starts_with("kubepods"));
        let name = part.strip_suffix(".scope").unwrap_or(part);
        if let Some((id, runtime)) = PREFIXES.iter().find_map(|(prefix, runtime)| {
            let id = name.strip_prefix(prefix)?;
            is_container_id(id).then_some((id, *runtime))
        }) {
            w.container_id = Some(id.to_owned());
            w.runtime = Some(runtime);
        } else if let Some(machine) = part
            .strip_prefix("machine-")
            .and_then(|m| m.strip_suffix(".scope"))
            .map(systemd_unescape)
            // libvirt's VMs share machine.slice: a qemu process is the host's.
            .filter(|m| !m.is_empty() && !m.starts_with("qemu-"))
        {
            w.container_id = Some(machine);
            w.runtime = Some("systemd-nspawn");
        } else if previous == Some("docker") && is_container_id(part) {
            // Docker's cgroupfs driver: /docker/<id>.
            w.container_id = Some((*part).to_owned());
            w.runtime = Some("docker");
        } else if let Some(uid) = pod_uid(part, under_kubepods) {
            w.pod_uid = Some(uid);
        } else if is_container_id(part)
            && previous.is_some_and(|p| !p.ends_with(".slice") && pod_uid(p, true).is_some())
        {
            // Kubernetes with the cgroupfs driver: /kubepods/<qos>/pod<uid>/<id>.
            w.container_id = Some((*part).to_owned());
            w.runtime = None;
        }
    }
    w
}

/// Docker, containerd, CRI-O and Podman ids: 64 lower-case hex digits.
fn is_container_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `kubepods-besteffort-pod<uid>.slice` (systemd driver, the uid's dashes
/// written as underscores) or `pod<uid>` under `kubepods` (cgroupfs driver).
fn pod_uid(part: &str, under_kubepods: bool) -> Option<String> {
    let uid = match part.strip_suffix(".slice") {
        Some(slice) if slice.starts_with("kubepods") => slice.rsplit_once("-pod")?.1,
        None if under_kubepods => part.strip_prefix("pod")?,
        _ => return None,
    };
    let ok = (32..=36).contains(&uid.len())
        && uid
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b'-' || b == b'_');
    ok.then(|| uid.replace('_', "-"))
}

/// systemd writes unit-name bytes outside `[A-Za-z0-9:_.]` (and `-`, its
/// separator) as `\xNN`.
fn systemd_unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i..i + 4)
            .filter(|e| e[0] == b'\\' && e[1] == b'x')
            .and_then(|e| u8::from_str_radix(std::str::from_utf8(&e[2..]).ok()?, 16).ok());
        if let Some(byte) = hex {
            out.push(byte);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The namespaces of process `pid` (`self`, `1`, a number), from `/proc/PID/ns`.
pub fn namespaces_of(pid: &str) -> std::io::Result<Namespaces> {
    let mut out = [0u32; 6];
    for (slot, name) in out.iter_mut().zip(NAMES) {
        let ino = fs::metadata(format!("/proc/{pid}/ns/{name}"))?.ino();
        *slot = u32::try_from(ino).unwrap_or(0);
    }
    Ok(out)
}

/// The host's namespaces: PID 1's, read once when the sensor starts (see
/// [`init_host`]); where PID 1's cannot be read (a sandbox denying access to
/// it), kthreadd's: kernel threads live in the initial namespaces. None when
/// neither can be read.
pub fn host_namespaces() -> Option<Namespaces> {
    *HOST.get_or_init(read_host)
}

static HOST: OnceLock<Option<Namespaces>> = OnceLock::new();

fn read_host() -> Option<Namespaces> {
    let init = match namespaces_of("1") {
        Ok(ns) => return Some(ns),
        Err(err) => err,
    };
    let kthreadd = fs::read_to_string("/proc/2/comm").is_ok_and(|c| c.trim_end() == "kthreadd");
    if kthreadd && let Ok(ns) = namespaces_of("2") {
        return Some(ns);
    }
    log::warn!(
        "cannot read PID 1's namespaces ({init}) nor kthreadd's: \
         records will not say whether an exec ran in the host's namespaces"
    );
    None
}

/// Reads the host's namespaces now, at start, rather than at the first record.
pub fn init_host() {
    let _ = host_namespaces();
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f4e8b1c2d9a0e7f6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a";

    fn w(id: Option<&str>, runtime: Option<&'static str>, pod: Option<&str>) -> Workload {
        Workload {
            container_id: id.map(str::to_owned),
            runtime,
            pod_uid: pod.map(str::to_owned),
        }
    }

    #[test]
    fn runtimes_layouts() {
        let cases = [
            (
                format!("/system.slice/docker-{ID}.scope"),
                w(Some(ID), Some("docker"), None),
            ),
            (format!("/docker/{ID}"), w(Some(ID), Some("docker"), None)),
            (
                format!(
                    "/kubepods.slice/kubepods-besteffort.slice/\
                     kubepods-besteffort-pod1b2c3d4e_5f60_4a7b_8c9d_0e1f2a3b4c5d.slice/\
                     cri-containerd-{ID}.scope"
                ),
                w(
                    Some(ID),
                    Some("containerd"),
                    Some("1b2c3d4e-5f60-4a7b-8c9d-0e1f2a3b4c5d"),
                ),
            ),
            (
                format!(
                    "/kubepods.slice/kubepods-pod1b2c3d4e_5f60_4a7b_8c9d_0e1f2a3b4c5d.slice/crio-{ID}.scope"
                ),
                w(
                    Some(ID),
                    Some("cri-o"),
                    Some("1b2c3d4e-5f60-4a7b-8c9d-0e1f2a3b4c5d"),
                ),
            ),
            (
                format!("/kubepods/burstable/pod1b2c3d4e-5f60-4a7b-8c9d-0e1f2a3b4c5d/{ID}"),
                w(Some(ID), None, Some("1b2c3d4e-5f60-4a7b-8c9d-0e1f2a3b4c5d")),
            ),
            (
                format!(
                    "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope/container"
                ),
                w(Some(ID), Some("podman"), None),
            ),
            (
                "/machine.slice/machine-build\\x2dbox.scope/payload".to_owned(),
                w(Some("build-box"), Some("systemd-nspawn"), None),
            ),
            // The innermost container wins.
            (
                format!(
                    "/machine.slice/machine-outer.scope/payload/system.slice/docker-{ID}.scope"
                ),
                w(Some(ID), Some("docker"), None),
            ),
        ];
        for (path, want) in cases {
            assert_eq!(parse(&path), want, "{path}");
        }
    }

    #[test]
    fn look_alikes_are_not_containers() {
        for path in [
            "/",
            "/user.slice/user-1000.slice/session-2.scope",
            "/system.slice/docker.service",
            "/system.slice/docker-abc.scope",
            &format!("/system.slice/crio-conmon-{ID}.scope"),
            &format!("/docker/{}", &ID[..63]),
            &format!("/docker/{}", ID.to_uppercase()),
            &format!("/elsewhere/{ID}"),
            "/machine.slice/machine-qemu\\x2d1\\x2dvm.scope",
            "/machine.slice/machine-.scope",
            "/podcast/pod-notauid",
            "/elsewhere/pod1b2c3d4e-5f60-4a7b-8c9d-0e1f2a3b4c5d",
            "/kubepods.slice/kubepods-besteffort.slice",
        ] {
            assert_eq!(parse(path), Workload::default(), "{path}");
        }
    }

    #[test]
    fn unescape() {
        assert_eq!(systemd_unescape("a\\x2db\\x2fc"), "a-b/c");
        assert_eq!(systemd_unescape("a\\x2"), "a\\x2");
        assert_eq!(systemd_unescape("\\xzz"), "\\xzz");
    }

    #[test]
    fn own_namespaces_are_read() {
        let ns = namespaces_of("self").unwrap();
        assert!(ns.iter().all(|&n| n != 0), "{ns:?}");
        assert_eq!(namespaces_of("self").unwrap(), ns);
    }
}
