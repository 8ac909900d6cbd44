//! Debian's own kernels, fetched once with a private apt configuration (the
//! host's sources stay untouched) and cached under `.tools/kernels/`.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use crate::step;

/// A kernel of the matrix: a Debian package, taken from these suites only.
pub struct Kernel {
    /// What `--kernel` takes and the cache directory's name.
    pub name: &'static str,
    pub distro: &'static str,
    /// The (meta)package to resolve.
    package: &'static str,
    suites: &'static [&'static str],
}

/// The matrix: the kernels most of a SOC's Debian fleet runs.
pub const KERNELS: &[Kernel] = &[
    Kernel {
        name: "5.10",
        distro: "Debian 11",
        package: "linux-image-amd64",
        suites: &["bullseye", "bullseye-security"],
    },
    Kernel {
        name: "6.1",
        distro: "Debian 12",
        package: "linux-image-amd64",
        suites: &["bookworm", "bookworm-security"],
    },
    Kernel {
        name: "6.12",
        distro: "Debian 12",
        package: "linux-image-6.12-amd64",
        suites: &["bookworm", "bookworm-security"],
    },
];

const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// A kernel image ready to boot.
pub struct Image {
    pub vmlinuz: PathBuf,
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

/// The images of `kernels`, from the cache, fetching what is missing (or,
/// with `refresh`, whatever Debian has newer). Touches the network only then.
pub fn images(root: &Path, kernels: &[&Kernel], refresh: bool) -> Result<Vec<Image>> {
    let cache = root.join(".tools/kernels");
    let mut apt: Option<Apt> = None;
    kernels
        .iter()
        .map(|k| {
            let dir = cache.join(k.name);
            if !refresh && let Some(image) = cached(&dir)? {
                return Ok(image);
            }
            if apt.is_none() {
                apt = Some(Apt::update(&cache.join("apt"))?);
            }
            let apt = apt.as_ref().expect("just set");
            fetch(apt, k, &dir)
        })
        .collect()
}

fn cached(dir: &Path) -> Result<Option<Image>> {
    let vmlinuz = dir.join("vmlinuz");
    let package = dir.join("package");
    if !vmlinuz.is_file() || !package.is_file() {
        return Ok(None);
    }
    let package = fs::read_to_string(&package)
        .with_context(|| format!("reading {}", package.display()))?
        .trim()
        .to_owned();
    Ok(Some(Image { vmlinuz, package }))
}

/// Resolves the kernel's metapackage to its versioned image package, downloads
/// it and keeps `/boot/vmlinuz-*` and `/boot/config-*` from it.
fn fetch(apt: &Apt, k: &Kernel, dir: &Path) -> Result<Image> {
    let (meta_version, suite) = apt.newest(k.package, k.suites)?;
    let (image_pkg, image_version) = apt.image_dependency(k.package, &meta_version)?;
    let package = format!("{image_pkg} {image_version}");
    if let Some(image) = cached(dir)?
        && image.package == package
    {
        return Ok(image);
    }
    step(&format!(
        "fetching {}'s kernel {}: {image_pkg} {image_version} (for {} {meta_version} from {suite}) into {}",
        k.distro,
        k.name,
        k.package,
        dir.display()
    ));
    let work = dir.with_extension("partial");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    apt.download(&image_pkg, &image_version, &work)?;
    let deb = fs::read_dir(&work)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .with_context(|| format!("apt-get download left no .deb in {}", work.display()))?;
    extract_boot(&deb, &work)?;
    let boot = work.join("boot");
    let find = |prefix: &str| -> Result<PathBuf> {
        fs::read_dir(&boot)
            .with_context(|| format!("{} has no /boot", deb.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(prefix))
            })
            .with_context(|| format!("no /boot/{prefix}* in {}", deb.display()))
    };
    fs::rename(find("vmlinuz-")?, work.join("vmlinuz"))?;
    fs::rename(find("config-")?, work.join("config"))?;
    fs::write(work.join("package"), format!("{package}\n"))?;
    fs::remove_file(&deb)?;
    fs::remove_dir_all(&boot)?;
    // Whole or not at all: a half-fetched kernel never looks cached.
    let _ = fs::remove_dir_all(dir);
    fs::rename(&work, dir)
        .with_context(|| format!("moving {} to {}", work.display(), dir.display()))?;
    cached(dir)?.with_context(|| format!("{} incomplete after fetching", dir.display()))
}

fn extract_boot(deb: &Path, into: &Path) -> Result<()> {
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
        .args(["--wildcards", "./boot/vmlinuz-*", "./boot/config-*"])
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

/// apt with its own sources, lists and cache under `dir`.
struct Apt {
    dir: PathBuf,
}

impl Apt {
    /// Writes the sources for every suite of the matrix and downloads their lists.
    fn update(dir: &Path) -> Result<Self> {
        let apt = Self {
            dir: dir.to_path_buf(),
        };
        for sub in ["lists/partial", "cache/archives/partial"] {
            fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("creating {}", dir.join(sub).display()))?;
        }
        let mut suites: Vec<&str> = KERNELS.iter().flat_map(|k| k.suites).copied().collect();
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
            "reading Debian's package lists for {} (private apt configuration in {})",
            suites.join(", "),
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
            "APT::Architecture=amd64".to_owned(),
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

    /// The versioned `linux-image-*` package a metapackage version depends on
    /// (itself when it is one already), with the version it pins.
    fn image_dependency(&self, package: &str, version: &str) -> Result<(String, String)> {
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
