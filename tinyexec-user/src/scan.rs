//! `tinyexec-sensor scan PATH...`: the same rule, hunting on disk.
//!
//! Decides from `stat` first: a file of 270 bytes or more cannot match and is
//! never read. Prints matches the way `yara RULE PATH` does.

use std::{
    collections::HashSet,
    fs,
    io::{self, Read, Write},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, Instant},
};

use tinyexec_ebpf::rule;

#[derive(Debug, clap::Args)]
pub struct ScanArgs {
    /// One JSON object per match instead of `EQGRP_tinyexec PATH` lines.
    #[arg(long)]
    pub json: bool,
    /// Files and directories (walked recursively; symlinks followed, loops skipped).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
}

struct Scanner<W: Write> {
    out: W,
    json: bool,
    /// (device, inode) of directories entered: a symlink loop is entered once.
    dirs_seen: HashSet<(u64, u64)>,
    files: u64,
    matches: u64,
    errors: u64,
    progress: Option<Instant>,
}

/// Exit status: 0 no match, 1 a match, 2 an error (errors win: the hunt was incomplete).
pub fn scan(args: &ScanArgs) -> ExitCode {
    let stdout = io::stdout();
    // SAFETY: isatty on a constant fd.
    let tty = unsafe { libc::isatty(libc::STDERR_FILENO) } == 1;
    let mut s = Scanner {
        out: io::BufWriter::new(stdout.lock()),
        json: args.json,
        dirs_seen: HashSet::new(),
        files: 0,
        matches: 0,
        errors: 0,
        progress: tty.then(Instant::now),
    };
    for path in &args.paths {
        s.path(path, true);
    }
    if s.progress.is_some() {
        eprint!("\r\x1b[K");
    }
    if let Err(e) = s.out.flush() {
        eprintln!("tinyexec-sensor: scan: writing results: {e}");
        return ExitCode::from(2);
    }
    match (s.errors, s.matches) {
        (0, 0) => ExitCode::SUCCESS,
        (0, _) => ExitCode::from(1),
        _ => ExitCode::from(2),
    }
}

impl<W: Write> Scanner<W> {
    fn error(&mut self, path: &Path, err: impl std::fmt::Display) {
        self.errors += 1;
        if self.progress.is_some() {
            eprint!("\r\x1b[K");
        }
        eprintln!("tinyexec-sensor: scan: {}: {err}", path.display());
    }

    fn path(&mut self, path: &Path, top: bool) {
        // Follows symlinks, as yara does; loops are caught by `dirs_seen`.
        let md = match fs::metadata(path) {
            Ok(md) => md,
            Err(e) if !top && e.kind() == io::ErrorKind::NotFound => return, // dangling link
            Err(e) => return self.error(path, e),
        };
        if md.is_dir() {
            if self.dirs_seen.insert((md.dev(), md.ino())) {
                self.dir(path);
            }
        } else if md.is_file() {
            self.file(path, md.len());
        }
        // FIFOs, sockets and devices are not files to hunt in (and reading a FIFO blocks).
    }

    fn dir(&mut self, path: &Path) {
        let entries = match fs::read_dir(path) {
            Ok(e) => e,
            Err(e) => return self.error(path, e),
        };
        let mut children: Vec<PathBuf> = Vec::new();
        for entry in entries {
            match entry {
                Ok(e) => children.push(e.path()),
                Err(e) => self.error(path, e),
            }
        }
        children.sort();
        for child in children {
            self.path(&child, false);
        }
    }

    fn file(&mut self, path: &Path, size: u64) {
        self.files += 1;
        self.show_progress();
        if !rule::size_can_match(size) {
            return;
        }
        let mut content = Vec::with_capacity(rule::FILESIZE_LT_LEN);
        let read =
            fs::File::open(path).and_then(|f| f.take(rule::FILESIZE_LT).read_to_end(&mut content));
        if let Err(e) = read {
            return self.error(path, e);
        }
        if rule::evaluate(&content).is_some() {
            self.matches += 1;
            if let Err(e) = self.report(path, &content) {
                self.error(path, format!("writing the result: {e}"));
            }
        }
    }

    fn report(&mut self, path: &Path, content: &[u8]) -> io::Result<()> {
        if !self.json {
            return writeln!(self.out, "{} {}", rule::NAME, path.display());
        }
        let sha256 = crate::exec::detect::sha256_hex(content);
        let rec = serde_json::json!({
            "event": {"kind": "alert", "action": "scan"},
            "rule": {
                "name": rule::NAME,
                "verdict": "match",
                "strings": [
                    {"identifier": "$s1", "offsets": rule::find_all(content, &rule::S1).collect::<Vec<_>>()},
                    {"identifier": "$s2", "offsets": rule::find_all(content, &rule::S2).collect::<Vec<_>>()},
                ],
            },
            "file": {
                "path": path.to_string_lossy(),
                "size": content.len(),
                "hash": {"sha256": sha256},
            },
        });
        serde_json::to_writer(&mut self.out, &rec)?;
        self.out.write_all(b"\n")
    }

    fn show_progress(&mut self) {
        const EVERY: Duration = Duration::from_millis(200);
        if let Some(last) = self.progress
            && last.elapsed() >= EVERY
        {
            eprint!(
                "\r\x1b[Kscanned {} files, {} matches, {} errors",
                self.files, self.matches, self.errors
            );
            self.progress = Some(Instant::now());
        }
    }
}
