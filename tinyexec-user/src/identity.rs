//! Names for the numbers the kernel gives: users, groups, this host.

use std::collections::HashMap;

/// Caches uid/gid lookups (through NSS, so LDAP/sssd users resolve too; in
/// the static build through the host's `getent`, see [`host_nss`]).
/// Unknown ids are cached as absent, so an exec storm by an unnamed uid costs one lookup.
#[derive(Default)]
pub struct Names {
    users: HashMap<u32, Option<String>>,
    groups: HashMap<u32, Option<String>>,
}

impl Names {
    pub fn user(&mut self, uid: u32) -> Option<&str> {
        self.users
            .entry(uid)
            .or_insert_with(|| lookup_user(uid))
            .as_deref()
    }

    pub fn group(&mut self, gid: u32) -> Option<&str> {
        self.groups
            .entry(gid)
            .or_insert_with(|| lookup_group(gid))
            .as_deref()
    }
}

fn c_name(ptr: *const libc::c_char) -> Option<String> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: NSS returns a NUL-terminated string inside the caller's buffer.
    let s = unsafe { std::ffi::CStr::from_ptr(ptr) };
    Some(s.to_string_lossy().into_owned())
}

fn lookup_user(uid: u32) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: zeroed passwd is a valid out-parameter.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result = std::ptr::null_mut();
    // SAFETY: all pointers are valid for the call; buf outlives the use of pwd's fields.
    let rc = unsafe {
        libc::getpwuid_r(
            uid,
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        return host_nss("passwd", uid);
    }
    c_name(pwd.pw_name)
}

fn lookup_group(gid: u32) -> Option<String> {
    let mut buf = vec![0u8; 16384];
    // SAFETY: zeroed group is a valid out-parameter.
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut result = std::ptr::null_mut();
    // SAFETY: as for getpwuid_r.
    let rc = unsafe {
        libc::getgrgid_r(
            gid,
            &mut grp,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        return host_nss("group", gid);
    }
    c_name(grp.gr_name)
}

/// Where Debian, Ubuntu, RHEL and Amazon Linux put glibc's `getent`.
#[cfg(target_env = "musl")]
const GETENT: [&str; 2] = ["/usr/bin/getent", "/bin/getent"];

/// The static build's C library, musl, reads `/etc/passwd` and `/etc/group`
/// (and asks nscd when it runs), never the host's NSS modules: directory
/// users (sssd, LDAP) would stay unnamed. For an id those files do not have,
/// ask the host's own `getent`, which goes through its NSS configuration.
/// Once per id: [`Names`] caches the answer, absent or not.
#[cfg(target_env = "musl")]
fn host_nss(database: &str, id: u32) -> Option<String> {
    let getent = GETENT.iter().find(|p| std::path::Path::new(p).is_file())?;
    let out = std::process::Command::new(getent)
        .args([database, &id.to_string()])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| getent_name(&String::from_utf8_lossy(&out.stdout)))
        .flatten()
}

/// glibc's own lookup already went through NSS.
#[cfg(not(target_env = "musl"))]
fn host_nss(_database: &str, _id: u32) -> Option<String> {
    None
}

/// The name in `getent passwd|group` output: `name:x:1000:...`.
#[cfg_attr(not(any(target_env = "musl", test)), allow(dead_code))]
fn getent_name(line: &str) -> Option<String> {
    let name = line.lines().next()?.split(':').next()?;
    (!name.is_empty()).then(|| name.to_owned())
}

/// This host's name (uname nodename).
pub fn hostname() -> String {
    // SAFETY: zeroed utsname is a valid out-parameter.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return String::new();
    }
    c_name(uts.nodename.as_ptr()).unwrap_or_default()
}

/// The kernel's boot id, which names this boot in every record.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// A random UUID from the kernel, naming this run of the sensor.
pub fn new_uuid() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn getent_output_gives_the_name() {
        assert_eq!(
            getent_name("jdoe:*:123456:123456:J Doe:/home/jdoe:/bin/bash\n").as_deref(),
            Some("jdoe")
        );
        assert_eq!(
            getent_name("admins:*:5000:jdoe\n").as_deref(),
            Some("admins")
        );
        assert_eq!(getent_name(""), None);
        assert_eq!(getent_name(":x:1:\n"), None);
    }

    #[test]
    fn root_has_a_name() {
        let mut names = Names::default();
        assert_eq!(names.user(0), Some("root"));
        assert_eq!(names.group(0), Some("root"));
    }
}
