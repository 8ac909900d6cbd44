//! Debian's own kernels, and the VMs' userland (Debian's busybox-static),
//! fetched once with a private apt configuration per architecture (the host's
//! sources stay untouched) and cached under `.tools/kernels/`.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use crate::{arch::Arch, files::find_in, step};

/// A kernel of the matrix: a Debian package, taken from these suites only.
pub struct Kernel {
    /// What `--kernel` takes and the cache directory's name.
    pub name: &'static str,
    pub distro: &'static str,
    pub arch: Arch,
    /// The (meta)package to resolve.
    package: &'static str,
    suites: &'static [&'static str],
}

/// The matrix: the kernels most of a SOC's Debian fleet runs, on both of its
/// architectures.
pub const KERNELS: &[Kernel] = &[
    Kernel {
        name: "5.10",
        distro: "Debian 11",
        arch: Arch::X86_64,
        package: "linux-image-amd64",
        suites: &["bullseye", "bullseye-security"],
    },
    Kernel {
        name: "6.1",
        distro: "Debian 12",
        arch: Arch::X86_64,
        package: "linux-image-amd64",
        suites: &["bookworm", "bookworm-security"],
    },
    Kernel {
        name: "6.12",
        distro: "Debian 12",
        arch: Arch::X86_64,
        package: "linux-image-6.12-amd64",
        suites: &["bookworm", "bookworm-security"],
    },
    Kernel {
        name: "6.1-arm64",
        distro: "Debian 12",
        arch: Arch::Aarch64,
        package: "linux-image-arm64",
        suites: &["bookworm", "bookworm-security"],
    },
    // arm64 attaches BPF LSM programs from 6.4 on: the refusal is proven on
    // arm64 here, the kill on 6.1-arm64.
    Kernel {
        name: "6.12-arm64",
        distro: "Debian 13",
        arch: Arch::Aarch64,
        package: "linux-image-arm64",
        suites: &["trixie", "trixie-security"],
    },
];

/// The VMs' userland: busybox-static, one static binary, from these suites.
const BUSYBOX: &str = "busybox-static";
const USERLAND_SUITES: &[&str] = &["bookworm", "bookworm-security"];

const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// A file from a Debian package, in the cache: a kernel image ready to boot,
/// or busybox.
pub struct Image {
    pub file: PathBuf,
    /// `PACKAGE VERSION` it came from.
    pub package: String,
}

pub fn by_name(name: &str) -> Result<&'static Kernel> {
    KERNELS.iter().find(|k| k.name == name).with_context(|| {
        let names: Vec<&str> = KERNELS.iter().map(|k| k.name).collect();
        format!(
            "--kernel {name}: no such kernel in the matrix (known: {})",
            names.join(", ")
        )
    })
}

/// Fetches from Debian what the cache lacks (or, with `refresh`, whatever
/// Debian has newer), with one private apt configuration per architecture.
/// Touches the network only then.
pub struct Fetcher {
    cache: PathBuf,
    refresh: bool,
    apts: BTreeMap<&'static str, Apt>,
}

impl Fetcher {
    pub fn new(root: &Path, refresh: bool) -> Self {
        Self {
            cache: root.join(".tools/kernels"),
            refresh,
            apts: BTreeMap::new(),
        }
    }

    fn apt(&mut self, arch: Arch) -> Result<&Apt> {
        if !self.apts.contains_key(arch.debian()) {
            // amd64's directory keeps the name it had before arm64 joined.
            let dir = match arch {
                Arch::X86_64 => self.cache.join("apt"),
                Arch::Aarch64 => self.cache.join(format!("apt-{}", arch.debian())),
            };
            let apt = Apt::update(&dir, arch)?;
            self.apts.insert(arch.debian(), apt);
        }
        Ok(&self.apts[arch.debian()])
    }

    /// The kernel image of `k`.
    pub fn image(&mut self, k: &Kernel) -> Result<Image> {
        let dir = self.cache.join(k.name);
        if !self.refresh
            && let Some(image) = cached(&dir, "vmlinuz")?
        {
            return Ok(image);
        }
        let apt = self.apt(k.arch)?;
        let what = format!("{}'s kernel {}", k.distro, k.name);
        fetch(
            apt,
            &what,
            k.package,
            k.suites,
            &dir,
            &[
                ("./boot/vmlinuz-*", "vmlinuz"),
                ("./boot/config-*", "config"),
            ],
        )?;
        cached(&dir, "vmlinuz")?
            .with_context(|| format!("{} incomplete after fetching", dir.display()))
    }

    /// The VMs' userland for `arch`: Debian's static busybox. Returns
    /// `PACKAGE VERSION` with the binary.
    pub fn busybox(&mut self, arch: Arch) -> Result<Image> {
        let dir = self.cache.join(format!("busybox-{}", arch.debian()));
        if !self.refresh
            && let Some(image) = cached(&dir, "busybox")?
        {
            return Ok(image);
        }
        let apt = self.apt(arch)?;
        let what = format!("the VMs' userland for {arch}");
        fetch(
            apt,
            &what,
            BUSYBOX,
            USERLAND_SUITES,
            &dir,
            &[("./bin/busybox", "busybox")],
        )?;
        cached(&dir, "busybox")?
            .with_context(|| format!("{} incomplete after fetching", dir.display()))
    }
}

/// `dir/file` with the `package` it came from, when both are there.
fn cached(dir: &Path, name: &str) -> Result<Option<Image>> {
    let file = dir.join(name);
    let package = dir.join("package");
    if !file.is_file() || !package.is_file() {
        return Ok(None);
    }
    let package = fs::read_to_string(&package)
        .with_context(|| format!("reading {}", package.display()))?
        .trim()
        .to_owned();
    Ok(Some(Image { file, package }))
}

/// Resolves `package` (a kernel metapackage, or any package) to the package
/// it pins, downloads that and keeps the files matching each pattern as its
/// name in `dir`, with `dir/package` naming the package and version.
fn fetch(
    apt: &Apt,
    what: &str,
    package: &str,
    suites: &[&str],
    dir: &Path,
    files: &[(&str, &str)],
) -> Result<()> {
    let (version, suite) = apt.newest(package, suites)?;
    let (real_pkg, real_version) = apt.pinned_image(package, &version)?;
    let full = format!("{real_pkg} {real_version}");
    if fs::read_to_string(dir.join("package")).is_ok_and(|p| p.trim() == full)
        && files.iter().all(|(_, name)| dir.join(name).is_file())
    {
        return Ok(());
    }
    step(&format!(
        "fetching {what}: {real_pkg} {real_version} (for {package} {version} from {suite}, {}) into {}",
        apt.arch.debian(),
        dir.display()
    ));
    let work = dir.with_extension("partial");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    apt.download(&real_pkg, &real_version, &work)?;
    let deb = find_in(&work, |n| n.ends_with(".deb"))?
        .with_context(|| format!("apt-get download left no .deb in {}", work.display()))?;
    let unpacked = work.join("unpacked");
    fs::create_dir_all(&unpacked)?;
    let patterns: Vec<&str> = files.iter().map(|(p, _)| *p).collect();
    extract(&deb, &unpacked, &patterns)?;
    for (pattern, name) in files {
        // `./boot/vmlinuz-*`: the one file in `boot/` whose name starts so.
        let (sub, prefix) = pattern
            .trim_start_matches("./")
            .rsplit_once('/')
            .context("pattern without a directory")?;
        let prefix = prefix.trim_end_matches('*');
        let from = unpacked.join(sub);
        let found = find_in(&from, |n| n.starts_with(prefix))
            .with_context(|| format!("{} has no /{sub}", deb.display()))?
            .with_context(|| format!("no /{sub}/{prefix}* in {}", deb.display()))?;
        fs::rename(found, work.join(name))?;
    }
    fs::write(work.join("package"), format!("{full}\n"))?;
    fs::remove_file(&deb)?;
    fs::remove_dir_all(&unpacked)?;
    // Whole or not at all: a half-fetched kernel never looks cached.
    let _ = fs::remove_dir_all(dir);
    fs::rename(&work, dir)
        .with_context(|| format!("moving {} to {}", work.display(), dir.display()))
}

fn extract(deb: &Path, into: &Path, patterns: &[&str]) -> Result<()> {
    let mut dpkg = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdout(Stdio::piped())
        .spawn()
        .context("starting dpkg-deb")?;
    let tar_in = dpkg.stdout.take().context("dpkg-deb's stdout")?;
    let tar = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(into)
        .arg("--wildcards")
        .args(patterns)
        .stdin(tar_in)
        .status()
        .context("starting tar")?;
    let dpkg = dpkg.wait().context("waiting for dpkg-deb")?;
    if !dpkg.success() || !tar.success() {
        bail!(
            "unpacking {} failed (dpkg-deb {dpkg}, tar {tar})",
            deb.display()
        );
    }
    Ok(())
}

/// apt for one architecture, with its own sources, lists and cache under `dir`.
struct Apt {
    dir: PathBuf,
    arch: Arch,
}

impl Apt {
    /// Writes the sources for every suite of the matrix's kernels of `arch`
    /// and of the userland, and downloads their lists.
    fn update(dir: &Path, arch: Arch) -> Result<Self> {
        let apt = Self {
            dir: dir.to_path_buf(),
            arch,
        };
        for sub in ["lists/partial", "cache/archives/partial"] {
            fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("creating {}", dir.join(sub).display()))?;
        }
        let mut suites: Vec<&str> = KERNELS
            .iter()
            .filter(|k| k.arch == arch)
            .flat_map(|k| k.suites)
            .chain(USERLAND_SUITES)
            .copied()
            .collect();
        suites.sort_unstable();
        suites.dedup();
        let sources: String = suites
            .iter()
            .map(|s| {
                let archive = if s.ends_with("-security") {
                    "debian-security"
                } else {
                    "debian"
                };
                format!("deb [signed-by={KEYRING}] http://deb.debian.org/{archive} {s} main\n")
            })
            .collect();
        fs::write(dir.join("sources.list"), sources)?;
        step(&format!(
            "reading Debian's package lists for {} ({}, private apt configuration in {})",
            suites.join(", "),
            arch.debian(),
            dir.display()
        ));
        let status = apt
            .cmd("apt-get")
            .args(["-qq", "update"])
            .status()
            .context("starting apt-get update")?;
        if !status.success() {
            bail!(
                "apt-get update with {} failed ({status}): the kernels come from Debian's archive",
                dir.join("sources.list").display()
            );
        }
        Ok(apt)
    }

    fn cmd(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        let d = |sub: &str| self.dir.join(sub).display().to_string();
        for opt in [
            format!("Dir::Etc::sourcelist={}", d("sources.list")),
            "Dir::Etc::sourceparts=-".to_owned(),
            format!("Dir::State::Lists={}", d("lists")),
            format!("Dir::Cache={}", d("cache")),
            format!("APT::Architecture={}", self.arch.debian()),
            // Downloads land in our own directory, which _apt may not write.
            "APT::Sandbox::User=root".to_owned(),
        ] {
            cmd.arg("-o").arg(opt);
        }
        cmd
    }

    fn output(&self, program: &str, args: &[&str]) -> Result<String> {
        let out = self
            .cmd(program)
            .args(args)
            .output()
            .with_context(|| format!("starting {program}"))?;
        if !out.status.success() {
            bail!(
                "{program} {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The newest version of `package` in `suites`, with its suite.
    fn newest(&self, package: &str, suites: &[&str]) -> Result<(String, String)> {
        let madison = self.output("apt-cache", &["madison", package])?;
        // `PKG | VERSION | URL SUITE/COMPONENT ARCH Packages`, newest first.
        madison
            .lines()
            .find_map(|line| {
                let mut cols = line.split('|').map(str::trim);
                let (_, version, source) = (cols.next()?, cols.next()?, cols.next()?);
                let suite = source.split_whitespace().nth(1)?.split('/').next()?;
                suites
                    .contains(&suite)
                    .then(|| (version.to_owned(), suite.to_owned()))
            })
            .with_context(|| format!("no {package} in {}:\n{madison}", suites.join(", ")))
    }

    /// The versioned `linux-image-*` package a kernel metapackage version
    /// depends on, with the version it pins; any other package is itself.
    fn pinned_image(&self, package: &str, version: &str) -> Result<(String, String)> {
        if !package.starts_with("linux-image-") {
            return Ok((package.to_owned(), version.to_owned()));
        }
        let show = self.output("apt-cache", &["show", &format!("{package}={version}")])?;
        let depends = show
            .lines()
            .find_map(|l| l.strip_prefix("Depends:"))
            .with_context(|| format!("{package} {version} has no Depends:\n{show}"))?;
        // `linux-image-6.1.0-57-amd64 (= 6.1.192-3)`; of alternatives, the first.
        depends
            .split(',')
            .filter_map(|dep| dep.split('|').next())
            .find_map(|dep| {
                let (name, rest) = dep.trim().split_once(' ')?;
                let pinned = rest.trim().strip_prefix("(=")?.strip_suffix(')')?.trim();
                name.starts_with("linux-image-")
                    .then(|| (name.to_owned(), pinned.to_owned()))
            })
            .with_context(|| {
                format!("{package} {version} depends on no pinned linux-image-*: {depends}")
            })
    }

    fn download(&self, package: &str, version: &str, into: &Path) -> Result<()> {
        let status = self
            .cmd("apt-get")
            .args(["-qq", "download", &format!("{package}={version}")])
            .current_dir(into)
            .status()
            .context("starting apt-get download")?;
        if !status.success() {
            bail!("apt-get download {package}={version} failed ({status})");
        }
        Ok(())
    }
}
