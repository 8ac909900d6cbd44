//! Reading kernel memory at offsets learnt from BTF.

use aya_ebpf::helpers::{bpf_probe_read_kernel, generated};
use tinyexec_ebpf::{WINDOW, flags};

/// The offset of a kernel field, from the `OFFSETS` global user space filled in.
macro_rules! off {
    ($field:ident) => {
        crate::kernel::offset(&crate::program::OFFSETS.$field)
    };
}
pub(crate) use off;

/// A field of `OFFSETS`, read volatile: the compiler must not fold the
/// build-time placeholder. A function, not the macro's own unsafe block, so
/// `off!` reads the same inside and outside unsafe code.
#[inline(always)]
pub(crate) fn offset(field: &u32) -> usize {
    // SAFETY: a reference is valid for reads.
    (unsafe { core::ptr::read_volatile(field) }) as usize
}

/// Reads a `T` at `base + offset` in kernel memory.
#[inline(always)]
pub(crate) fn read<T: Copy>(base: usize, offset: usize) -> Result<T, i32> {
    // SAFETY: bpf_probe_read_kernel checks the address; a bad one is an error, not a fault.
    unsafe { bpf_probe_read_kernel((base + offset) as *const T) }
}

/// Like [`read`], but a failure yields zero and sets [`flags::READ_ERROR`], so
/// one unreadable field never costs the whole record.
#[inline(always)]
pub(crate) fn read_or_flag<T: Copy + Default>(fl: &mut u32, base: usize, offset: usize) -> T {
    if let Ok(v) = read(base, offset) {
        v
    } else {
        *fl |= flags::READ_ERROR;
        T::default()
    }
}

/// Reads [`WINDOW`] bytes at `base + start` (flagging a failure): several
/// fields that sit close together for one helper call.
#[inline(always)]
pub(crate) fn read_window(fl: &mut u32, buf: &mut [u8; WINDOW], base: usize, start: usize) {
    // SAFETY: bpf_probe_read_kernel checks the address; a bad one is an error, not a fault.
    let r = unsafe {
        generated::bpf_probe_read_kernel(
            buf.as_mut_ptr().cast(),
            WINDOW as u32,
            (base + start) as *const _,
        )
    };
    if r != 0 {
        *fl |= flags::READ_ERROR;
    }
}
