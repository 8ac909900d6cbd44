//! Looking for files.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

/// The first entry of `dir` whose (UTF-8) file name satisfies `pred`.
pub fn find_in(dir: &Path, pred: impl Fn(&str) -> bool) -> io::Result<Option<PathBuf>> {
    Ok(fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(&pred)))
}
