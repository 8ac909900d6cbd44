//! One exec, from the kernel's record to a verdict: the record decoded
//! (`decode`), the rule evaluated on the bytes that ran (`detect`, reading a
//! file through `files` in helper processes, `reads`, when the header alone
//! cannot decide), and what enriches it into a record: user and group names
//! (`identity`), the container from its cgroup (`container`) and its names
//! from its runtime's state (`runtimes`), times (`clock`). Uses no other
//! folder of the daemon.

pub(crate) mod clock;
pub(crate) mod container;
pub mod decode;
pub(crate) mod detect;
mod files;
pub(crate) mod identity;
pub(crate) mod reads;
pub(crate) mod runtimes;
