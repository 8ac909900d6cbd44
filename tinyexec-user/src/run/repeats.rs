//! The bound on alert floods: one file exec'd in a loop must not become tens
//! of thousands of alerts (nor as many Sentinel records to pay for).
//!
//! Every distinct alert is emitted at once: the first exec of a file, named by
//! its device, inode, size and content (the SHA-256 of the file, or of the
//! kernel's header when the file was not seen whole), with the same verdict,
//! action (`exec`, `killed` or `denied`) and kind (`alert`, or `suppressed` by the same
//! exclusion). That opens a window of `--repeat-window` seconds. Execs with the
//! same identity inside the window are repeats: counted, not alerted. When the
//! window ends, one aggregate record carries their count (`repeats.count`),
//! with the details of the last one; the next exec after it is a first
//! occurrence again. So a file in a loop costs at most two records per window.
//! With `--all-execs` each repeat is still its own record, with
//! `event.kind: "event"` and `tinyexec.repeat_of`, but not another alert.
//!
//! A repeat with a command line not seen in its window is alerted, with
//! `tinyexec.repeat_of`: the stager's arguments name the program it launches
//! under a fake name, so each payload must reach the SOC, not a count. At most
//! [`MAX_COMMAND_LINES`] command lines a window are alerted so; the rest are
//! repeats, and a loop of identical runs is still two records a window.

use std::{
    collections::{HashMap, HashSet},
    hash::{BuildHasher as _, RandomState},
};

use crate::{
    exec::{
        decode::Exec,
        detect::{Verdict, sha256_hex},
    },
    record::Kind,
};

/// Files followed at once. Past it a new file is not followed: its repeats are
/// alerts again (more alerts, never a missed one) until windows close.
const MAX_FOLLOWED: usize = 4096;
/// Distinct command lines alerted per window (the first exec's included).
pub const MAX_COMMAND_LINES: usize = 16;

/// What makes two alerts the same alert.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    device: u64,
    inode: u64,
    size: i64,
    /// The inode's change time: a file deleted and another created with the
    /// same content, which may get the same inode number, is another file.
    ctime: (i64, u32),
    /// Hex SHA-256 of the file, or `header:` and that of the header the kernel read.
    content: String,
    /// Device and inode of the file named in exec, when the match is on it
    /// (an interpreter ran): one interpreter runs many scripts.
    target: Option<(u64, u64)>,
    verdict: &'static str,
    killed: bool,
    denied: bool,
    kind: Kind,
    exclusion: Option<String>,
}

impl Key {
    pub fn of(exec: &Exec, verdict: Option<&Verdict>, kind: Kind, exclusion: Option<&str>) -> Self {
        let target = match verdict {
            Some(Verdict::Match {
                target: Some(t), ..
            }) => Some((t.device, t.inode)),
            _ => None,
        };
        let (content, verdict) = match verdict {
            Some(Verdict::Match {
                sha256: Some(h), ..
            }) => (h.clone(), "match"),
            other => {
                let hex = sha256_hex(exec.header.as_deref().unwrap_or_default());
                let verdict = match other {
                    Some(Verdict::Match { .. }) => "match",
                    Some(Verdict::Undetermined { .. }) => "undetermined",
                    None => "none",
                };
                (format!("header:{hex}"), verdict)
            }
        };
        Self {
            device: exec.device,
            inode: exec.inode,
            size: exec.size,
            ctime: exec.ctime,
            content,
            target,
            verdict,
            killed: exec.killed,
            denied: exec.denied,
            kind,
            exclusion: exclusion.map(str::to_owned),
        }
    }
}

/// Repeats waiting for their window to end.
pub struct Pending {
    pub count: u64,
    pub first_ktime_ns: u64,
    pub of_sequence: u64,
    /// The last repeat, whose details the aggregate carries.
    pub last: Exec,
    pub verdict: Option<Verdict>,
    pub kind: Kind,
    /// The exclusion (name, line) of suppressed repeats.
    pub exclusion: Option<(String, usize)>,
}

struct Window {
    end_ns: u64,
    of_sequence: u64,
    pending: Option<Pending>,
    /// Hashes of the command lines alerted in this window.
    command_lines: HashSet<u64>,
}

/// What an exec is, given what came before.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    /// Emit it now; then call [`Tracker::opened`] with its sequence number.
    First,
    /// Counted into the window opened by this alert.
    Repeat { of_sequence: u64 },
    /// A repeat with a command line new to the window: alert it, as a repeat of this one.
    NewCommandLine { of_sequence: u64 },
    /// Not followed (the bound is off, or too many files at once): emit it.
    Untracked,
}

pub struct Tracker {
    window_ns: u64,
    window_secs: u64,
    windows: HashMap<Key, Window>,
    /// Keyed per run: command lines an attacker crafts to collide with a
    /// payload already alerted cannot be computed in advance.
    hasher: RandomState,
}

impl Tracker {
    /// `window_secs` 0: no bound, every alert is emitted.
    pub fn new(window_secs: u64) -> Self {
        Self {
            window_ns: window_secs.saturating_mul(1_000_000_000),
            window_secs,
            windows: HashMap::new(),
            hasher: RandomState::new(),
        }
    }

    pub fn window_secs(&self) -> u64 {
        self.window_secs
    }

    /// Classifies one alert-like exec. An earlier window of the same identity
    /// that has ended is returned first, for its aggregate to go out before.
    pub fn observe(
        &mut self,
        key: &Key,
        exec: &Exec,
        verdict: Option<&Verdict>,
        exclusion: Option<(String, usize)>,
    ) -> (Option<Pending>, Seen) {
        if self.window_ns == 0 {
            return (None, Seen::Untracked);
        }
        let mut ended = None;
        let line = self.hasher.hash_one(&exec.args);
        if let Some(w) = self.windows.get_mut(key) {
            if exec.ktime_ns < w.end_ns {
                if w.command_lines.len() < MAX_COMMAND_LINES && w.command_lines.insert(line) {
                    return (
                        None,
                        Seen::NewCommandLine {
                            of_sequence: w.of_sequence,
                        },
                    );
                }
                let p = w.pending.get_or_insert_with(|| Pending {
                    count: 0,
                    first_ktime_ns: exec.ktime_ns,
                    of_sequence: w.of_sequence,
                    last: exec.clone(),
                    verdict: verdict.cloned(),
                    kind: key.kind,
                    exclusion: exclusion.clone(),
                });
                p.count += 1;
                p.last = exec.clone();
                p.verdict = verdict.cloned();
                p.exclusion = exclusion;
                return (
                    None,
                    Seen::Repeat {
                        of_sequence: w.of_sequence,
                    },
                );
            }
            ended = self.windows.remove(key).and_then(|w| w.pending);
        }
        if self.windows.len() >= MAX_FOLLOWED {
            return (ended, Seen::Untracked);
        }
        (ended, Seen::First)
    }

    /// The first occurrence, `exec`, went out as record `sequence`: its window opens.
    pub fn opened(&mut self, key: Key, sequence: u64, exec: &Exec) {
        let line = self.hasher.hash_one(&exec.args);
        self.windows.insert(
            key,
            Window {
                end_ns: exec.ktime_ns.saturating_add(self.window_ns),
                of_sequence: sequence,
                pending: None,
                command_lines: HashSet::from([line]),
            },
        );
    }

    /// Windows ended by `now_ns` (`CLOCK_BOOTTIME`): their aggregates, oldest first.
    pub fn expire(&mut self, now_ns: u64) -> Vec<Pending> {
        let ended: Vec<Key> = self
            .windows
            .iter()
            .filter(|(_, w)| w.end_ns <= now_ns)
            .map(|(k, _)| k.clone())
            .collect();
        let mut out: Vec<Pending> = ended
            .iter()
            .filter_map(|k| self.windows.remove(k).and_then(|w| w.pending))
            .collect();
        out.sort_by_key(|p| p.first_ktime_ns);
        out
    }

    /// At exit: every window's aggregate, ended or not.
    pub fn drain(&mut self) -> Vec<Pending> {
        self.expire(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tinyexec_ebpf::ExecRecord;

    fn exec(ktime_ns: u64, inode: u64) -> Exec {
        // SAFETY: all-zero is a valid ExecRecord.
        let mut rec: ExecRecord = unsafe { std::mem::zeroed() };
        rec.ktime_ns = ktime_ns;
        rec.ino = inode;
        crate::exec::decode::decode(&crate::exec::decode::encode(&rec, &[])).unwrap()
    }

    fn matched() -> Verdict {
        Verdict::Match {
            source: crate::exec::detect::Source::Kernel,
            sha256: Some("ab".repeat(32)),
            s1_offsets: vec![1],
            s2_offsets: vec![2],
            target: None,
        }
    }

    #[test]
    #[expect(
        clippy::many_single_char_names,
        reason = "s a second, t the tracker, the rest its records as the other tests name them"
    )]
    fn first_at_once_repeats_counted_then_one_aggregate() {
        let s = 1_000_000_000;
        let mut t = Tracker::new(10);
        let v = matched();
        let a = exec(s, 7);
        let key = Key::of(&a, Some(&v), Kind::Alert, None);
        assert_eq!(t.observe(&key, &a, Some(&v), None).1, Seen::First);
        t.opened(key.clone(), 5, &a);
        for i in 1..=299 {
            let r = exec(s + i * 1_000_000, 7);
            assert_eq!(
                t.observe(&key, &r, Some(&v), None).1,
                Seen::Repeat { of_sequence: 5 }
            );
        }
        // Another file is another alert.
        let b = exec(2 * s, 8);
        let other = Key::of(&b, Some(&v), Kind::Alert, None);
        assert_ne!(key, other);
        assert_eq!(t.observe(&other, &b, Some(&v), None).1, Seen::First);
        assert!(t.expire(5 * s).is_empty(), "the window is still open");
        let agg = t.expire(11 * s);
        assert_eq!(agg.len(), 1);
        assert_eq!((agg[0].count, agg[0].of_sequence), (299, 5));
        assert_eq!(agg[0].last.ktime_ns, s + 299 * 1_000_000);
        // After the window the file is new again.
        let c = exec(12 * s, 7);
        assert_eq!(t.observe(&key, &c, Some(&v), None).1, Seen::First);
    }

    #[test]
    fn a_repeat_past_the_window_flushes_it_first() {
        let s = 1_000_000_000;
        let mut t = Tracker::new(1);
        let v = matched();
        let a = exec(s, 7);
        let key = Key::of(&a, Some(&v), Kind::Alert, None);
        t.observe(&key, &a, Some(&v), None);
        t.opened(key.clone(), 1, &a);
        t.observe(&key, &exec(s + 10, 7), Some(&v), None);
        let (ended, seen) = t.observe(&key, &exec(3 * s, 7), Some(&v), None);
        assert_eq!(ended.map(|p| p.count), Some(1));
        assert_eq!(seen, Seen::First);
        assert_eq!(
            Tracker::new(0).observe(&key, &a, Some(&v), None).1,
            Seen::Untracked
        );
    }

    #[test]
    fn a_new_command_line_in_the_window_is_alerted_up_to_the_bound() {
        let second = 1_000_000_000;
        let mut t = Tracker::new(10);
        let v = matched();
        let with_args = |i: u64, args: &[&str]| {
            let mut e = exec(second + i, 7);
            e.args = args.iter().map(|&a| a.to_owned()).collect();
            e
        };
        let a = with_args(0, &["/tmp/x", "payload-0"]);
        let key = Key::of(&a, Some(&v), Kind::Alert, None);
        assert_eq!(t.observe(&key, &a, Some(&v), None).1, Seen::First);
        t.opened(key.clone(), 3, &a);
        // The same command line again: a repeat.
        assert_eq!(
            t.observe(
                &key,
                &with_args(1, &["/tmp/x", "payload-0"]),
                Some(&v),
                None
            )
            .1,
            Seen::Repeat { of_sequence: 3 }
        );
        // Each new one is alerted, up to the bound (the first counts).
        for i in 1..MAX_COMMAND_LINES {
            let e = with_args(10 + i as u64, &["/tmp/x", &format!("payload-{i}")]);
            assert_eq!(
                t.observe(&key, &e, Some(&v), None).1,
                Seen::NewCommandLine { of_sequence: 3 },
                "{i}"
            );
            // ... once.
            assert_eq!(
                t.observe(&key, &e, Some(&v), None).1,
                Seen::Repeat { of_sequence: 3 }
            );
        }
        let past = with_args(100, &["/tmp/x", "one-too-many"]);
        assert_eq!(
            t.observe(&key, &past, Some(&v), None).1,
            Seen::Repeat { of_sequence: 3 }
        );
    }
}
