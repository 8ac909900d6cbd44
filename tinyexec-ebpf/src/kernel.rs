//! Reading kernel memory at offsets learnt from BTF.

use core::mem::MaybeUninit;

use aya_ebpf::helpers::{bpf_probe_read_kernel, generated};
use tinyexec_ebpf::{WINDOW, flags};

/// The offset of a kernel field, from the `OFFSETS` global user space filled in.
macro_rules! off {
    ($field:ident) => {
        crate::kernel::offset(&crate::maps::OFFSETS.$field)
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

/// A `T` at `base + offset` with a plain load. Only for a typed pointer of a
/// BTF-typed program (an argument, or a pointer loaded through one): the
/// verifier checks that the offset falls on a field of the kernel's type
/// (offsets are read-only globals, constants to it) and makes the load
/// fault-safe, a bad address reading as zero. Volatile, so the compiler
/// neither merges neighbouring fields into one wider load nor moves it.
#[inline(always)]
pub(crate) fn load<T: Copy>(base: usize, offset: usize) -> T {
    // SAFETY: see above: the kernel turns the load into a guarded one.
    unsafe { core::ptr::read_volatile((base + offset) as *const T) }
}

/// How a program reads the kernel's structs: [`Typed`] with plain loads,
/// where every pointer it reads through is BTF-typed (the typed entry's
/// arguments, and pointers loaded through them), [`Probed`] with helper
/// calls. The record's fields are read once, written generic over this.
pub(crate) trait Reader: Copy {
    /// Whether the verifier checked the offsets this reader reads at: a
    /// typed load must fall on a field of the kernel's own type, and the
    /// typed entry loads only with the running kernel's BTF. Offsets read
    /// with helpers may come from another BTF (`--btf`) and misread.
    const OFFSETS_CHECKED: bool;

    /// The `T` at `base + offset`. A failed read yields zero and sets
    /// [`flags::READ_ERROR`]; a typed load cannot fail (a bad address
    /// reads as zero, see [`load`]).
    fn get<T: Copy + Default>(self, fl: &mut u32, base: usize, offset: usize) -> T;

    /// The 16 bytes at `base + offset` (a task's `comm`) into `dst`, which
    /// is 8-aligned.
    fn bytes16(self, fl: &mut u32, dst: *mut [u8; 16], base: usize, offset: usize);
}

#[derive(Clone, Copy)]
pub(crate) struct Typed;

#[derive(Clone, Copy)]
pub(crate) struct Probed;

impl Reader for Typed {
    const OFFSETS_CHECKED: bool = true;

    #[inline(always)]
    fn get<T: Copy + Default>(self, _fl: &mut u32, base: usize, offset: usize) -> T {
        load(base, offset)
    }

    #[inline(always)]
    fn bytes16(self, _fl: &mut u32, dst: *mut [u8; 16], base: usize, offset: usize) {
        let words: [u64; 2] = [load(base, offset), load(base, offset + 8)];
        // SAFETY: the caller's `dst` is 8-aligned and 16 bytes long.
        #[expect(clippy::cast_ptr_alignment, reason = "the caller's dst is 8-aligned")]
        unsafe {
            dst.cast::<[u64; 2]>().write(words);
        }
    }
}

impl Reader for Probed {
    const OFFSETS_CHECKED: bool = false;

    #[inline(always)]
    fn get<T: Copy + Default>(self, fl: &mut u32, base: usize, offset: usize) -> T {
        read_or_flag(fl, base, offset)
    }

    #[inline(always)]
    fn bytes16(self, fl: &mut u32, dst: *mut [u8; 16], base: usize, offset: usize) {
        // SAFETY: bpf_probe_read_kernel checks the address; a bad one is an
        // error (the buffer zeroed), not a fault.
        let r = unsafe {
            generated::bpf_probe_read_kernel(dst.cast(), 16, (base + offset) as *const _)
        };
        if r != 0 {
            *fl |= flags::READ_ERROR;
        }
    }
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

/// [`WINDOW`] bytes of a kernel struct, read with one helper call: several
/// fields that sit close together. Not zeroed first (the helper writes every
/// byte, zeroes on failure; a zeroing loop cost more than the read), and
/// 8-byte aligned, so a field is one load (user space puts the window's start
/// on an 8-byte boundary of the struct: every field is aligned in it).
pub(crate) struct Window(MaybeUninit<[u64; WINDOW / 8]>);

impl Window {
    /// Reads the window at `base + start`, flagging a failure.
    #[inline(always)]
    pub(crate) fn read(fl: &mut u32, base: usize, start: usize) -> Self {
        let mut w = MaybeUninit::<[u64; WINDOW / 8]>::uninit();
        // SAFETY: bpf_probe_read_kernel checks the address; a bad one is an
        // error (the buffer zeroed), not a fault.
        let r = unsafe {
            generated::bpf_probe_read_kernel(
                w.as_mut_ptr().cast(),
                WINDOW as u32,
                (base + start) as *const _,
            )
        };
        if r != 0 {
            *fl |= flags::READ_ERROR;
        }
        Self(w)
    }

    /// The field at `at` bytes into the window: a constant the verifier knows
    /// (offsets are read-only globals), a multiple of the field's size.
    #[inline(always)]
    pub(crate) fn get<T: Copy>(&self, at: usize) -> T {
        // SAFETY: the helper wrote all WINDOW bytes; user space checked that
        // `at` is aligned for `T` and that the field lies inside the window.
        unsafe { core::ptr::read(self.0.as_ptr().cast::<u8>().add(at).cast()) }
    }
}
