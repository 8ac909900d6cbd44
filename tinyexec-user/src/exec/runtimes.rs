//! Which workload ran an exec: the container's name and image, and its
//! Kubernetes pod, from the container runtimes' own state, found by the
//! container id the cgroup gave (`container.rs`).
//!
//! Files, not APIs: each runtime keeps what it knows of a container in a
//! file that exists while the container does (Docker's and Podman's until it
//! is removed, so a container that already exited is still named). Reading
//! one costs a file read, needs no client library, no socket and no gRPC,
//! and never waits on a daemon that is busy or hung:
//! - containerd, and Kubernetes through its CRI plugin: the task's OCI bundle,
//!   `/run/containerd/io.containerd.runtime.v2.task/NAMESPACE/ID/config.json`,
//!   whose annotations are the CRI's `io.kubernetes.cri.*` for a pod's
//!   container (no name for a container `ctr` started without them);
//! - Docker: `/var/lib/docker/containers/ID/config.v2.json` (its name, the
//!   image as it was asked for, the image id; cri-dockerd's pod labels);
//! - Podman and CRI-O (containers/storage):
//!   `/var/lib/containers/storage/overlay-containers/containers.json` (names,
//!   the image's name in its metadata), and CRI-O's bundle
//!   `/run/containers/storage/overlay-containers/ID/userdata/config.json`
//!   (`io.kubernetes.*` annotations).
//!
//! Look-ups run on a thread of their own, asked when an exec's record is
//! made (or, for an exec a file reader must decide first, as soon as the
//! kernel's record arrives); the data path waits for an answer at most
//! [`WAIT`] and otherwise sends the record with what is known and why the
//! rest is not.

use std::{
    collections::{HashMap, VecDeque},
    fs::File,
    io::Read as _,
    path::{Path, PathBuf},
    sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, mpsc},
    thread,
    time::{Duration, Instant},
};

use serde::Deserialize;

/// How long the data path waits for a container it has never looked up: the
/// look-up is a few file reads; a record is not held longer for its names.
pub const WAIT: Duration = Duration::from_millis(20);
/// How long an answer is kept: a container's name and image are fixed at
/// its creation, and a new container has a new id.
const KEEP_FOUND: Duration = Duration::from_mins(10);
/// How long "not found" is believed before the files are read again.
const KEEP_MISSING: Duration = Duration::from_secs(2);
/// Containers remembered at most (the oldest answer goes first).
const MAX_ENTRIES: usize = 4096;
/// The largest state file read (containerd's bundles are a few KiB;
/// containers.json grows with the containers of a host).
const MAX_FILE: u64 = 16 << 20;

/// Where each runtime keeps its state (the host's paths; a Kubernetes `DaemonSet` mounts
/// them at the same paths).
#[derive(Clone, Debug)]
pub struct Roots {
    pub containerd_tasks: PathBuf,
    pub docker: PathBuf,
    /// containers/storage's graph root (Podman's and CRI-O's containers.json).
    pub storage: PathBuf,
    /// CRI-O's run root (its bundles).
    pub storage_run: PathBuf,
}

impl Default for Roots {
    fn default() -> Self {
        Self {
            containerd_tasks: "/run/containerd/io.containerd.runtime.v2.task".into(),
            docker: "/var/lib/docker/containers".into(),
            storage: "/var/lib/containers/storage".into(),
            storage_run: "/run/containers/storage".into(),
        }
    }
}

/// What a runtime's state says of one container.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Found {
    /// Whose state it was found in.
    pub runtime: &'static str,
    pub name: Option<String>,
    /// The image as it was asked for (`registry.example/payments:1.2`).
    pub image: Option<String>,
    /// The image's id or digest (`sha256:…`), where the runtime keeps it.
    pub image_digest: Option<String>,
    pub pod_uid: Option<String>,
    pub pod_name: Option<String>,
    pub pod_namespace: Option<String>,
    /// The Kubernetes container's name (in the pod's spec).
    pub kubernetes_container: Option<String>,
}

/// An OCI runtime spec, for its annotations only.
#[derive(Deserialize)]
struct OciSpec {
    #[serde(default)]
    annotations: HashMap<String, String>,
}

/// Docker's `config.v2.json`, for the fields read.
#[derive(Deserialize)]
struct DockerConfig {
    #[serde(rename = "Name", default)]
    name: String,
    #[serde(rename = "Image", default)]
    image_id: String,
    #[serde(rename = "Config", default)]
    config: DockerInner,
}

#[derive(Deserialize, Default)]
struct DockerInner {
    #[serde(rename = "Image", default)]
    image: String,
    #[serde(rename = "Labels", default)]
    labels: Option<HashMap<String, String>>,
}

/// One container of containers/storage's `containers.json`.
#[derive(Deserialize)]
struct StorageContainer {
    id: String,
    #[serde(default)]
    names: Vec<String>,
    #[serde(default)]
    image: String,
    /// JSON in a string: Podman's and CRI-O's own metadata.
    #[serde(default)]
    metadata: String,
}

#[derive(Deserialize, Default)]
struct StorageMetadata {
    #[serde(rename = "image-name", default)]
    image_name: String,
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, String> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let mut text = Vec::new();
    file.take(MAX_FILE + 1)
        .read_to_end(&mut text)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if text.len() as u64 > MAX_FILE {
        return Err(format!("{}: larger than {MAX_FILE} bytes", path.display()));
    }
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn non_empty(s: Option<&String>) -> Option<String> {
    s.filter(|s| !s.is_empty()).cloned()
}

/// The Kubernetes names in a container's annotations or labels, as the CRI
/// plugin (`io.kubernetes.cri.*`) or CRI-O and cri-dockerd (`io.kubernetes.*`) write them.
fn kubernetes(found: &mut Found, a: &HashMap<String, String>) {
    let first = |keys: &[&str]| keys.iter().find_map(|k| non_empty(a.get(*k)));
    found.pod_uid = first(&["io.kubernetes.cri.sandbox-uid", "io.kubernetes.pod.uid"]);
    found.pod_name = first(&["io.kubernetes.cri.sandbox-name", "io.kubernetes.pod.name"]);
    found.pod_namespace = first(&[
        "io.kubernetes.cri.sandbox-namespace",
        "io.kubernetes.pod.namespace",
    ]);
    found.kubernetes_container = first(&[
        "io.kubernetes.cri.container-name",
        "io.kubernetes.container.name",
    ]);
    if let Some(image) = first(&[
        "io.kubernetes.cri.image-name",
        "io.kubernetes.cri-o.ImageName",
    ]) {
        found.image = Some(image);
    }
}

/// containerd: the task's bundle in any of its namespaces (`k8s.io` for
/// Kubernetes, `moby` for Docker, `default` for `ctr`).
fn containerd(roots: &Roots, id: &str) -> Result<Option<Found>, String> {
    for ns in dir_entries(&roots.containerd_tasks)? {
        let path = ns.join(id).join("config.json");
        if let Some(spec) = read_json::<OciSpec>(&path)? {
            let mut found = Found {
                runtime: "containerd",
                ..Found::default()
            };
            kubernetes(&mut found, &spec.annotations);
            found.name.clone_from(&found.kubernetes_container);
            return Ok(Some(found));
        }
    }
    Ok(None)
}

fn docker(roots: &Roots, id: &str) -> Result<Option<Found>, String> {
    let Some(c) = read_json::<DockerConfig>(&roots.docker.join(id).join("config.v2.json"))? else {
        return Ok(None);
    };
    let mut found = Found {
        runtime: "docker",
        name: Some(c.name.trim_start_matches('/').to_owned()).filter(|n| !n.is_empty()),
        image: Some(c.config.image).filter(|i| !i.is_empty()),
        image_digest: Some(c.image_id).filter(|i| !i.is_empty()),
        ..Found::default()
    };
    if let Some(labels) = &c.config.labels {
        kubernetes(&mut found, labels);
    }
    Ok(Some(found))
}

/// The entries of a directory (none when it does not exist: that runtime
/// does not run here).
fn dir_entries(dir: &Path) -> Result<Vec<PathBuf>, String> {
    match std::fs::read_dir(dir) {
        Ok(d) => Ok(d.flatten().map(|e| e.path()).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(format!("{}: {e}", dir.display())),
    }
}

/// Podman and CRI-O: containers/storage's list of containers, one per
/// storage driver (`overlay-containers/`, `vfs-containers/`, …), then the
/// container's bundle (Podman's under the graph root, CRI-O's under the run
/// root) for a pod's names: CRI-O's when it has them, Podman's otherwise.
fn storage(roots: &Roots, id: &str) -> Result<Option<Found>, String> {
    let lists = dir_entries(&roots.storage)?
        .into_iter()
        .filter(|d| d.to_string_lossy().ends_with("-containers"));
    let mut hit = None;
    for dir in lists {
        let Some(all) = read_json::<Vec<StorageContainer>>(&dir.join("containers.json"))? else {
            continue;
        };
        if let Some(c) = all.into_iter().find(|c| c.id == id) {
            hit = Some((dir, c));
            break;
        }
    }
    let Some((dir, c)) = hit else {
        return Ok(None);
    };
    let meta: StorageMetadata = serde_json::from_str(&c.metadata).unwrap_or_default();
    let mut found = Found {
        runtime: "podman",
        name: c.names.into_iter().next(),
        image: Some(meta.image_name).filter(|i| !i.is_empty()),
        image_digest: Some(c.image)
            .filter(|i| !i.is_empty())
            .map(|i| format!("sha256:{i}")),
        ..Found::default()
    };
    let driver = dir
        .file_name()
        .map(std::ffi::OsStr::to_os_string)
        .unwrap_or_default();
    for root in [&roots.storage, &roots.storage_run] {
        let bundle = root.join(&driver).join(id).join("userdata/config.json");
        if let Some(spec) = read_json::<OciSpec>(&bundle)? {
            kubernetes(&mut found, &spec.annotations);
            if found.kubernetes_container.is_some() {
                found.runtime = "cri-o";
            }
            break;
        }
    }
    Ok(Some(found))
}

/// One runtime's look-up of a container by id.
type LookUp = fn(&Roots, &str) -> Result<Option<Found>, String>;

/// Looks `id` up in the state of the runtime its cgroup named, else in each.
pub fn look_up(roots: &Roots, id: &str, runtime: Option<&str>) -> Result<Option<Found>, String> {
    let order: [LookUp; 3] = match runtime {
        Some("containerd") => [containerd, docker, storage],
        Some("podman" | "cri-o") => [storage, containerd, docker],
        _ => [docker, containerd, storage],
    };
    let mut errors = Vec::new();
    for look in order {
        match look(roots, id) {
            Ok(Some(found)) => return Ok(Some(found)),
            Ok(None) => {}
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(None)
    } else {
        Err(errors.join("; "))
    }
}

/// An image as it was asked for, split as ECS wants it: the name, and the
/// tag (`name:tag`, the colon after the last slash) without a digest.
pub fn image_name_tag(image: &str) -> (String, Option<String>) {
    let image = image.split_once('@').map_or(image, |(name, _)| name);
    let slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[slash..].rfind(':') {
        Some(colon) => (
            image[..slash + colon].to_owned(),
            Some(image[slash + colon + 1..].to_owned()),
        ),
        None => (image.to_owned(), None),
    }
}

/// What is known of one container.
#[derive(Clone, Debug)]
enum Entry {
    Known {
        found: Option<Arc<Found>>,
        until: Instant,
    },
    /// Its files could not be read: why.
    Failed {
        why: Arc<str>,
        until: Instant,
    },
    Pending,
}

#[derive(Default)]
struct Cache {
    entries: HashMap<String, Entry>,
    /// Ids in the order they were asked for, to forget the oldest.
    order: VecDeque<String>,
}

#[derive(Default)]
struct Shared {
    cache: Mutex<Cache>,
    answered: Condvar,
}

fn lock(m: &Mutex<Cache>) -> MutexGuard<'_, Cache> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The answer for one container: what was found, or why nothing is known.
pub type Answer = Result<Arc<Found>, String>;

/// The data path's handle on the look-up thread.
pub struct Workloads {
    shared: Arc<Shared>,
    ask: Option<mpsc::Sender<(String, Option<&'static str>)>>,
}

impl Workloads {
    pub fn new(roots: Roots) -> Self {
        let shared = Arc::new(Shared::default());
        let (tx, rx) = mpsc::channel::<(String, Option<&'static str>)>();
        let worker = Arc::clone(&shared);
        let spawned = thread::Builder::new()
            .name("workloads".into())
            .spawn(move || {
                for (id, runtime) in rx {
                    let now = Instant::now();
                    let entry = match look_up(&roots, &id, runtime) {
                        Ok(found) => Entry::Known {
                            until: now
                                + if found.is_some() {
                                    KEEP_FOUND
                                } else {
                                    KEEP_MISSING
                                },
                            found: found.map(Arc::new),
                        },
                        Err(why) => Entry::Failed {
                            why: why.into(),
                            until: now + KEEP_MISSING,
                        },
                    };
                    // Only an entry still asked for: one forgotten meanwhile
                    // (the bound) is not brought back past the bound.
                    if let Some(e) = lock(&worker.cache).entries.get_mut(&id) {
                        *e = entry;
                    }
                    worker.answered.notify_all();
                }
            });
        let ask = match spawned {
            Ok(_) => Some(tx),
            Err(e) => {
                log::warn!("no container look-up thread ({e}): records carry container ids only");
                None
            }
        };
        Self { shared, ask }
    }

    /// Asks about `id` now, without waiting: the answer is usually there by
    /// the time the record is made.
    pub fn prefetch(&self, id: &str, runtime: Option<&'static str>) {
        let mut cache = lock(&self.shared.cache);
        let now = Instant::now();
        let stale = match cache.entries.get(id) {
            None => true,
            Some(Entry::Known { until, .. } | Entry::Failed { until, .. }) => now >= *until,
            Some(Entry::Pending) => false,
        };
        if !stale {
            return;
        }
        let Some(ask) = &self.ask else { return };
        if ask.send((id.to_owned(), runtime)).is_err() {
            return;
        }
        if !cache.entries.contains_key(id) {
            cache.order.push_back(id.to_owned());
            while cache.order.len() > MAX_ENTRIES {
                if let Some(old) = cache.order.pop_front() {
                    cache.entries.remove(&old);
                }
            }
        }
        cache.entries.insert(id.to_owned(), Entry::Pending);
    }

    /// What is known of `id`, waiting at most [`WAIT`] for an answer.
    pub fn get(&self, id: &str, runtime: Option<&'static str>) -> Answer {
        self.prefetch(id, runtime);
        let cache = lock(&self.shared.cache);
        let (cache, _) = self
            .shared
            .answered
            .wait_timeout_while(cache, WAIT, |c| {
                matches!(c.entries.get(id), Some(Entry::Pending))
            })
            .unwrap_or_else(PoisonError::into_inner);
        match cache.entries.get(id) {
            Some(Entry::Known { found: Some(f), .. }) => Ok(Arc::clone(f)),
            Some(Entry::Known { found: None, .. }) => Err(
                "not in the state of Docker, containerd, Podman or CRI-O (removed already, or \
                 another runtime)"
                    .to_owned(),
            ),
            Some(Entry::Failed { why, .. }) => Err(format!("reading the runtime's state: {why}")),
            Some(Entry::Pending) => Err(format!(
                "the runtime's state was not read within {} ms",
                WAIT.as_millis()
            )),
            None => Err("no container look-up thread".to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_split_into_name_and_tag() {
        let split = |s| image_name_tag(s);
        assert_eq!(
            split("registry.example/payments:1.2"),
            ("registry.example/payments".into(), Some("1.2".into()))
        );
        assert_eq!(
            split("registry.example:5000/payments"),
            ("registry.example:5000/payments".into(), None)
        );
        assert_eq!(
            split("localhost/tx-busybox:1@sha256:abcd"),
            ("localhost/tx-busybox".into(), Some("1".into()))
        );
        assert_eq!(split("busybox"), ("busybox".into(), None));
    }
}
