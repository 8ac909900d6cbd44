//! One exec.

pub(crate) mod clock;
pub(crate) mod container;
pub mod decode;
pub(crate) mod detect;
mod files;
pub(crate) mod identity;
pub(crate) mod reads;
