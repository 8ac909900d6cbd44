//! Names for the numbers the kernel gives: users, groups, this host.
//!
//! User and group names come from NSS, which may be LDAP or sssd across the
//! network: a lookup can take seconds. So lookups run on a resolver thread of
//! their own and the data path only reads a cache. A name not cached yet is
//! waited for a moment ([`NAME_WAIT`], far longer than a local lookup takes);
//! past it the record carries the number and the name comes in later records.

use std::{
    collections::HashMap,
    sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, mpsc},
    thread,
    time::{Duration, Instant},
};

/// How long the data path waits for a name it has never looked up.
const NAME_WAIT: Duration = Duration::from_millis(20);
/// How long "no such user" is believed (a user added later gets its name).
const ABSENT_FOR: Duration = Duration::from_mins(5);
/// How long a failing name service (EIO, a dead LDAP server) is left alone.
const FAILED_FOR: Duration = Duration::from_mins(1);
/// The largest buffer offered to NSS: a group with every user as a member fits.
const MAX_BUFFER: usize = 16 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Id {
    User(u32),
    Group(u32),
}

/// What is known about one id.
#[derive(Clone, Debug)]
enum Entry {
    /// Looked up: its name, or none. `until`: when to ask again (absent names only).
    Known {
        name: Option<Arc<str>>,
        until: Option<Instant>,
    },
    /// Asked for, no answer yet.
    Pending,
    /// Asked for ahead of need (root), nobody has waited for it yet.
    Prefetched,
    /// The name service failed; ask again after this.
    Failed(Instant),
}

/// The cache the resolver thread fills.
#[derive(Default)]
struct Shared {
    entries: Mutex<HashMap<Id, Entry>>,
    answered: Condvar,
}

fn lock(m: &Mutex<HashMap<Id, Entry>>) -> MutexGuard<'_, HashMap<Id, Entry>> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// uid/gid to name, cached; the data path's handle on the resolver thread.
pub struct Names {
    shared: Arc<Shared>,
    ask: Option<mpsc::Sender<Id>>,
    /// The data path's own copy of answers, read without a lock.
    local: HashMap<Id, (Option<Arc<str>>, Option<Instant>)>,
}

impl Default for Names {
    fn default() -> Self {
        Self::new()
    }
}

impl Names {
    pub fn new() -> Self {
        let shared = Arc::new(Shared::default());
        let (tx, rx) = mpsc::channel::<Id>();
        let resolver = Arc::clone(&shared);
        let spawned = thread::Builder::new().name("names".into()).spawn(move || {
            for id in rx {
                let entry = resolve(id);
                lock(&resolver.entries).insert(id, entry);
                resolver.answered.notify_all();
            }
        });
        let ask = match spawned {
            Ok(_) => Some(tx),
            Err(e) => {
                log::warn!("no name resolver thread ({e}): records carry uids and gids only");
                None
            }
        };
        let names = Self {
            shared,
            ask,
            local: HashMap::new(),
        };
        // root's names asked for at once: most execs are root's, and the
        // first record should not be the one that waits (or goes without).
        for id in [Id::User(0), Id::Group(0)] {
            names.prefetch(id);
        }
        names
    }

    /// Asks the resolver about `id` without waiting for the answer.
    fn prefetch(&self, id: Id) {
        let Some(sender) = &self.ask else { return };
        let mut entries = lock(&self.shared.entries);
        if !entries.contains_key(&id) && sender.send(id).is_ok() {
            entries.insert(id, Entry::Prefetched);
        }
    }

    pub fn user(&mut self, uid: u32) -> Option<&str> {
        self.name(Id::User(uid))
    }

    pub fn group(&mut self, gid: u32) -> Option<&str> {
        self.name(Id::Group(gid))
    }

    fn name(&mut self, id: Id) -> Option<&str> {
        let now = Instant::now();
        let fresh = self
            .local
            .get(&id)
            .is_some_and(|(_, until)| until.is_none_or(|u| now < u));
        if !fresh {
            match self.fetch(id, now) {
                Some(known) => {
                    self.local.insert(id, known);
                }
                // Not known (yet): the number this time, the cache asked again next time.
                None => return None,
            }
        }
        self.local.get(&id).and_then(|(n, _)| n.as_deref())
    }

    /// The shared cache's answer, asking the resolver (and waiting a moment)
    /// when it has none; None while there is no answer.
    fn fetch(&self, id: Id, now: Instant) -> Option<(Option<Arc<str>>, Option<Instant>)> {
        let mut entries = lock(&self.shared.entries);
        let ask = match entries.get(&id) {
            Some(Entry::Known { name, until }) if until.is_none_or(|u| now < u) => {
                return Some((name.clone(), *until));
            }
            // Someone waited already: do not pay the wait again for the same id.
            Some(Entry::Pending) => return None,
            Some(Entry::Failed(retry)) if now < *retry => return None,
            // Asked already: the first to need it waits for it like an asker.
            Some(Entry::Prefetched) => false,
            _ => true,
        };
        if ask {
            let sender = self.ask.as_ref()?;
            if sender.send(id).is_err() {
                entries.insert(id, Entry::Failed(now + FAILED_FOR));
                return None;
            }
        }
        entries.insert(id, Entry::Pending);
        let (entries, _) = self
            .shared
            .answered
            .wait_timeout_while(entries, NAME_WAIT, |e| {
                matches!(e.get(&id), Some(Entry::Pending | Entry::Prefetched))
            })
            .unwrap_or_else(PoisonError::into_inner);
        match entries.get(&id) {
            Some(Entry::Known { name, until }) => Some((name.clone(), *until)),
            _ => None,
        }
    }
}

/// What NSS says about one id.
fn resolve(id: Id) -> Entry {
    let now = Instant::now();
    let answer = match id {
        Id::User(uid) => PASSWD.name_of(uid),
        Id::Group(gid) => GROUP.name_of(gid),
    };
    match answer {
        Ok(Some(name)) => Entry::Known {
            name: Some(name.into()),
            until: None,
        },
        Ok(None) => Entry::Known {
            name: None,
            until: Some(now + ABSENT_FOR),
        },
        Err(rc) => {
            log::warn!(
                "looking up the name of {id:?} failed ({}); records carry the number, retried in {FAILED_FOR:?}",
                std::io::Error::from_raw_os_error(rc)
            );
            Entry::Failed(now + FAILED_FOR)
        }
    }
}

/// One of the C library's databases of names by id (`passwd`, `group`).
struct Database<E> {
    /// Its name for `getent`.
    name: &'static str,
    /// `sysconf` of the buffer size its `get*_r` suggests.
    size_hint: libc::c_int,
    /// `getpwuid_r` or `getgrgid_r`.
    get_r: unsafe extern "C" fn(
        u32,
        *mut E,
        *mut libc::c_char,
        libc::size_t,
        *mut *mut E,
    ) -> libc::c_int,
    /// The entry's name field.
    entry_name: fn(&E) -> *const libc::c_char,
}

const PASSWD: Database<libc::passwd> = Database {
    name: "passwd",
    size_hint: libc::_SC_GETPW_R_SIZE_MAX,
    get_r: libc::getpwuid_r,
    entry_name: |p| p.pw_name,
};

const GROUP: Database<libc::group> = Database {
    name: "group",
    size_hint: libc::_SC_GETGR_R_SIZE_MAX,
    get_r: libc::getgrgid_r,
    entry_name: |g| g.gr_name,
};

impl<E> Database<E> {
    /// The name of `id`; one the C library does not know, the static build
    /// asks the host's NSS for too (see [`host_nss`]).
    fn name_of(&self, id: u32) -> Result<Option<String>, i32> {
        lookup(id, self.size_hint, |id, buf| self.get(id, buf))
            .map(|name| name.or_else(|| host_nss(self.name, id)))
    }

    /// One `get*_r` call into `buf`: its return code and, on success, the name.
    fn get(&self, id: u32, buf: &mut [u8]) -> (i32, Option<String>) {
        let mut entry = std::mem::MaybeUninit::<E>::uninit();
        let mut result = std::ptr::null_mut();
        // SAFETY: all pointers are valid for the call; on success `result`
        // points at `entry`, filled in, its strings inside `buf`, which
        // outlives their use here.
        let rc = unsafe {
            (self.get_r)(
                id,
                entry.as_mut_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                &raw mut result,
            )
        };
        // SAFETY: non-null only when the entry was found and filled in.
        let found = if rc == 0 {
            unsafe { result.as_ref() }
        } else {
            None
        };
        (rc, found.and_then(|e| c_name((self.entry_name)(e))))
    }
}

/// Calls `get` with a buffer grown on ERANGE (the entry did not fit: a group
/// with many members) up to [`MAX_BUFFER`]; retries on EINTR. Ok(None): no
/// such id. Err: the name service failed.
fn lookup(
    id: u32,
    size_hint: libc::c_int,
    get: impl Fn(u32, &mut [u8]) -> (i32, Option<String>),
) -> Result<Option<String>, i32> {
    // SAFETY: sysconf has no preconditions.
    let hint = unsafe { libc::sysconf(size_hint) };
    let mut len = usize::try_from(hint).unwrap_or(0).clamp(1024, MAX_BUFFER);
    loop {
        let mut buf = vec![0u8; len];
        match get(id, &mut buf) {
            (0, name) => return Ok(name),
            (libc::EINTR, _) => {}
            (libc::ERANGE, _) if len < MAX_BUFFER => len = (len * 2).min(MAX_BUFFER),
            // getpwuid_r(3): these mean "not found" on some NSS modules.
            (libc::ENOENT | libc::ESRCH | libc::EBADF | libc::EPERM, _) => return Ok(None),
            (rc, _) => return Err(rc),
        }
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

/// Where Debian, Ubuntu, RHEL and Amazon Linux put glibc's `getent`.
#[cfg(target_env = "musl")]
const GETENT: [&str; 2] = ["/usr/bin/getent", "/bin/getent"];

/// The static build's C library, musl, reads `/etc/passwd` and `/etc/group`
/// (and asks nscd when it runs), never the host's NSS modules: directory
/// users (sssd, LDAP) would stay unnamed. For an id those files do not have,
/// ask the host's own `getent`, which goes through its NSS configuration.
/// On the resolver thread, once per id: [`Names`] caches the answer (an
/// absent one for a while).
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
#[cfg_attr(
    not(any(target_env = "musl", test)),
    expect(dead_code, reason = "only the static (musl) build asks getent")
)]
fn getent_name(line: &str) -> Option<String> {
    let name = line.lines().next()?.split(':').next()?;
    (!name.is_empty()).then(|| name.to_owned())
}

/// This host's name (uname nodename).
pub fn hostname() -> String {
    // SAFETY: zeroed utsname is a valid out-parameter.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer.
    if unsafe { libc::uname(&raw mut uts) } != 0 {
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
    fn root_resolves_and_an_unused_id_is_absent() {
        let mut names = Names::new();
        assert_eq!(names.user(0), Some("root"));
        assert_eq!(names.group(0), Some("root"));
        // Cached: the second answer needs no resolver.
        assert_eq!(names.user(0), Some("root"));
        assert_eq!(names.user(4_000_000_000), None);
    }

    #[test]
    fn erange_grows_the_buffer_until_the_entry_fits() {
        // A stand-in for NSS with a group of about 1 MiB of member names.
        fn get(_: u32, buf: &mut [u8]) -> (i32, Option<String>) {
            if buf.len() < 1 << 20 {
                (libc::ERANGE, None)
            } else {
                (0, Some(buf.len().to_string()))
            }
        }
        let len: usize = lookup(7, libc::_SC_GETGR_R_SIZE_MAX, get)
            .unwrap()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1 << 20..2 << 20).contains(&len), "{len}");
    }

    #[test]
    fn erange_past_the_cap_is_a_failure_not_an_absent_name() {
        fn get(_: u32, _: &mut [u8]) -> (i32, Option<String>) {
            (libc::ERANGE, None)
        }
        assert_eq!(
            lookup(7, libc::_SC_GETGR_R_SIZE_MAX, get),
            Err(libc::ERANGE)
        );
        fn io(_: u32, _: &mut [u8]) -> (i32, Option<String>) {
            (libc::EIO, None)
        }
        assert_eq!(lookup(7, libc::_SC_GETPW_R_SIZE_MAX, io), Err(libc::EIO));
        fn absent(_: u32, _: &mut [u8]) -> (i32, Option<String>) {
            (libc::ENOENT, None)
        }
        assert_eq!(lookup(7, libc::_SC_GETPW_R_SIZE_MAX, absent), Ok(None));
    }

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
}
