//! Reading the text files an operator points the sensor at (exclusions,
//! configuration): regular files only, opened without blocking, bounded in
//! size, and UTF-8 with the place of the first byte that is not.
//!
//! A FIFO or a device in their place must not stall the sensor (an `open` of
//! a FIFO blocks until a writer comes; a device may never end), and a huge
//! file must not be read whole before it is refused.

use std::{
    fs::{self, File, FileType, OpenOptions},
    io::Read,
    os::unix::fs::{FileTypeExt, OpenOptionsExt},
    path::Path,
};

use anyhow::{Result, bail};

/// Largest configuration file read (`config.toml`, Sentinel's settings): a
/// complete one is under 1 KiB.
pub const MAX_CONFIG_BYTES: u64 = 64 << 10;

/// `1 MiB`, `64 KiB` or `N bytes`, for messages about limits.
pub fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 20 && n.is_multiple_of(1 << 20) => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n.is_multiple_of(1 << 10) => format!("{} KiB", n >> 10),
        n => format!("{n} bytes"),
    }
}

/// What a file that is not a regular one is, for the errors that refuse it
/// (the one wording of the sensor's every such refusal).
pub fn file_kind(t: FileType) -> &'static str {
    if t.is_symlink() {
        "a symbolic link"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

fn refuse_irregular(path: &Path, what: &str, t: FileType) -> Result<()> {
    if !t.is_file() {
        bail!(
            "{what} {} is {}, not a regular file: refused (it could block or never end)",
            path.display(),
            file_kind(t)
        );
    }
    Ok(())
}

/// The whole of `path` as text, at most `limit` bytes; `what` names the file's
/// role in messages ("exclusions", "configuration"). Every error names the path.
pub fn read(path: &Path, what: &str, limit: u64) -> Result<String> {
    // stat first, so a device is never opened at all (opening some has effects).
    let md = fs::metadata(path)
        .map_err(|e| anyhow::anyhow!("cannot read {what} {}: {e}", path.display()))?;
    refuse_irregular(path, what, md.file_type())?;
    // O_NONBLOCK: should a FIFO replace the file between the stat and the open,
    // the open returns at once instead of waiting for a writer. std adds O_CLOEXEC.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| anyhow::anyhow!("cannot read {what} {}: {e}", path.display()))?;
    // The file opened is what counts, whatever the path named a moment ago.
    let md = file
        .metadata()
        .map_err(|e| anyhow::anyhow!("cannot read {what} {}: {e}", path.display()))?;
    refuse_irregular(path, what, md.file_type())?;
    let bytes = read_at_most(file, limit)
        .map_err(|e| anyhow::anyhow!("cannot read {what} {}: {e}", path.display()))?;
    if bytes.len() as u64 > limit {
        bail!(
            "{what} {} is too large: {} bytes, more than the limit of {}",
            path.display(),
            md.len().max(bytes.len() as u64),
            human_bytes(limit)
        );
    }
    utf8(&path.display().to_string(), bytes)
}

/// Reads up to `limit + 1` bytes: one more than allowed tells "too large"
/// without reading the rest.
fn read_at_most(file: File, limit: u64) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Text from `bytes`, or an error `name:LINE:COLUMN: ...` at the first byte
/// that is not UTF-8, with its offset and value.
pub fn utf8(name: &str, bytes: Vec<u8>) -> Result<String> {
    match String::from_utf8(bytes) {
        Ok(text) => Ok(text),
        Err(e) => {
            let bytes = e.as_bytes();
            let at = e.utf8_error().valid_up_to();
            let before = &bytes[..at];
            #[expect(
                clippy::naive_bytecount,
                reason = "once, on the error path: not worth a crate"
            )]
            let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
            let line_start = before
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
            // Valid UTF-8 up to `at`, so this never falls back.
            let column = std::str::from_utf8(&before[line_start..])
                .map_or(at - line_start, |s| s.chars().count())
                + 1;
            bail!(
                "{name}:{line}:{column}: not UTF-8 text: byte {:#04x} at offset {at} \
                 (save the file as UTF-8)",
                bytes[at]
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    fn dir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("tx-textfile-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn utf8_errors_give_line_column_and_offset() {
        let err = utf8("f", b"ab\n\xc3\xa9x\xffy\n".to_vec()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "f:2:3: not UTF-8 text: byte 0xff at offset 6 (save the file as UTF-8)"
        );
        let err = utf8("f", b"\x80".to_vec()).unwrap_err().to_string();
        assert!(
            err.starts_with("f:1:1:") && err.contains("offset 0"),
            "{err}"
        );
        // A character cut short at the end.
        let err = utf8("f", b"a\xe2\x82".to_vec()).unwrap_err().to_string();
        assert!(err.starts_with("f:1:2:") && err.contains("0xe2"), "{err}");
        assert_eq!(utf8("f", "é\n".into()).unwrap(), "é\n");
    }

    #[test]
    fn size_limit_reads_no_more_than_one_byte_past_it() {
        let d = dir("size");
        let p = d.join("f");
        fs::write(&p, vec![b'a'; 100]).unwrap();
        assert_eq!(read(&p, "test", 100).unwrap().len(), 100);
        let err = read(&p, "test", 99).unwrap_err().to_string();
        assert!(
            err.starts_with("test /")
                && err.contains("/f is too large: 100 bytes, more than the limit of 99 bytes"),
            "{err}"
        );
        assert_eq!(human_bytes(1 << 20), "1 MiB");
        assert_eq!(human_bytes(64 << 10), "64 KiB");
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn only_regular_files_are_read() {
        let d = dir("kinds");
        let fifo = d.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo on a NUL-terminated path we own.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let sock = d.join("sock");
        let _listener = UnixListener::bind(&sock).unwrap();
        for (path, kind) in [
            (&fifo, "a FIFO"),
            (&d, "a directory"),
            (&sock, "a socket"),
            (&"/dev/null".into(), "a character device"),
        ] {
            let err = read(path, "test", 1 << 20).unwrap_err().to_string();
            assert!(
                err.starts_with("test /")
                    && err.contains(&format!("is {kind}, not a regular file")),
                "{err}"
            );
        }
        let err = read(&d.join("missing"), "test", 1).unwrap_err().to_string();
        assert!(
            err.contains("cannot read test") && err.contains("missing"),
            "{err}"
        );
        fs::remove_dir_all(d).unwrap();
    }
}
