//! Just enough of the BTF format (the kernel's `Documentation/bpf/btf.rst`) to
//! doctor a copy of the kernel's BTF: find a struct's member and move its
//! offset; and to find a typedef's id (the bench's empty `tp_btf` program).
//!
//! The sensor has its own full reader, but it lives in the binary crate; this
//! one only walks the type section to locate a member's offset word, so the
//! tests can hand the sensor a BTF that lies about exactly one field.

use std::ops::Range;

/// The running kernel's own BTF.
pub const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";

const MAGIC: u16 = 0xeb9f;
const TYPE_LEN: usize = 12;

const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_ENUM64: u32 = 19;
const KIND_MAX: u32 = 19;

/// Where things are in a little-endian BTF blob.
#[derive(Debug)]
struct Layout {
    types: Range<usize>,
    strings: Range<usize>,
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, String> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| format!("BTF cut short at byte {at}"))
}

fn layout(b: &[u8]) -> Result<Layout, String> {
    let magic = b
        .get(..2)
        .map(|m| u16::from_le_bytes([m[0], m[1]]))
        .ok_or("BTF shorter than its magic")?;
    if magic != MAGIC {
        return Err(format!(
            "not little-endian BTF (magic {magic:#06x}, want {MAGIC:#06x})"
        ));
    }
    let hdr_len = u32_at(b, 4)? as usize;
    let section = |off_at: usize| -> Result<Range<usize>, String> {
        let start = hdr_len + u32_at(b, off_at)? as usize;
        let end = start + u32_at(b, off_at + 4)? as usize;
        if end > b.len() {
            return Err(format!(
                "BTF section {start}..{end} past the end ({} bytes)",
                b.len()
            ));
        }
        Ok(start..end)
    };
    Ok(Layout {
        types: section(8)?,
        strings: section(16)?,
    })
}

fn name<'a>(b: &'a [u8], l: &Layout, off: u32) -> Result<&'a [u8], String> {
    let start = l.strings.start + off as usize;
    let rest = b
        .get(start..l.strings.end)
        .ok_or_else(|| format!("string offset {off} past the string section"))?;
    let len = rest
        .iter()
        .position(|&c| c == 0)
        .ok_or_else(|| format!("string at {off} not NUL-terminated"))?;
    Ok(&rest[..len])
}

/// Bytes of kind-specific data after a type's 12-byte header.
fn extra_len(kind: u32, vlen: usize) -> Result<usize, String> {
    Ok(match kind {
        KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
        KIND_ARRAY => 12,
        KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
        KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
        1..=KIND_MAX => 0,
        _ => return Err(format!("unknown BTF kind {kind}")),
    })
}

/// One type of the type section: its id (the first is 1), where its header
/// starts, and what the header says.
struct Type {
    id: u32,
    at: usize,
    name_off: u32,
    kind: u32,
    vlen: usize,
    kind_flag: bool,
}

/// Every type of the type section, in order.
fn types(b: &[u8], l: &Layout) -> Result<Vec<Type>, String> {
    let mut found = Vec::new();
    let mut at = l.types.start;
    while at < l.types.end {
        let name_off = u32_at(b, at)?;
        let info = u32_at(b, at + 4)?;
        let (kind, vlen, kind_flag) = (
            (info >> 24) & 0x1f,
            (info & 0xffff) as usize,
            info >> 31 == 1,
        );
        let next = at + TYPE_LEN + extra_len(kind, vlen)?;
        if next > l.types.end {
            return Err(format!("BTF type at byte {at} runs past the type section"));
        }
        let id = u32::try_from(found.len() + 1).map_err(|_| "too many BTF types".to_owned())?;
        found.push(Type {
            id,
            at,
            name_off,
            kind,
            vlen,
            kind_flag,
        });
        at = next;
    }
    Ok(found)
}

/// Byte positions of the offset word of every `strukt.member` (a struct named
/// `strukt` with a direct member named `member`), with the struct's `kind_flag`.
fn member_offset_words(b: &[u8], strukt: &str, member: &str) -> Result<Vec<(usize, bool)>, String> {
    let l = layout(b)?;
    let mut found = Vec::new();
    for t in types(b, &l)? {
        if t.kind == KIND_STRUCT && name(b, &l, t.name_off)? == strukt.as_bytes() {
            for m in (0..t.vlen).map(|i| t.at + TYPE_LEN + 12 * i) {
                if name(b, &l, u32_at(b, m)?)? == member.as_bytes() {
                    found.push((m + 8, t.kind_flag));
                }
            }
        }
    }
    Ok(found)
}

/// The id of the typedef named `typedef` (what a BTF-typed tracepoint
/// program attaches by: `btf_trace_<tracepoint>`).
pub fn typedef_id(b: &[u8], typedef: &str) -> Result<u32, String> {
    let l = layout(b)?;
    for t in types(b, &l)? {
        if t.kind == KIND_TYPEDEF && name(b, &l, t.name_off)? == typedef.as_bytes() {
            return Ok(t.id);
        }
    }
    Err(format!("no typedef {typedef} in the BTF"))
}

/// The byte offset of `strukt.member` (every struct of that name must agree).
pub fn member_offset(b: &[u8], strukt: &str, member: &str) -> Result<u64, String> {
    let words = member_offset_words(b, strukt, member)?;
    let mut offsets = Vec::new();
    for (at, kind_flag) in words {
        let word = u32_at(b, at)?;
        let bits = if kind_flag { word & 0x00ff_ffff } else { word };
        offsets.push(u64::from(bits) / 8);
    }
    offsets.sort_unstable();
    offsets.dedup();
    match offsets[..] {
        [one] => Ok(one),
        [] => Err(format!(
            "no struct {strukt} with a member {member} in the BTF"
        )),
        _ => Err(format!(
            "structs {strukt} disagree on {member}: {offsets:?}"
        )),
    }
}

/// A copy of `b` in which `strukt.member` (in every struct of that name) lies
/// `delta_bytes` further on; nothing else changes.
pub fn move_member(
    b: &[u8],
    strukt: &str,
    member: &str,
    delta_bytes: u32,
) -> Result<Vec<u8>, String> {
    let words = member_offset_words(b, strukt, member)?;
    if words.is_empty() {
        return Err(format!(
            "no struct {strukt} with a member {member} in the BTF"
        ));
    }
    let mut out = b.to_vec();
    for (at, kind_flag) in words {
        let word = u32_at(b, at)?;
        let delta = delta_bytes * 8;
        let moved = if kind_flag {
            // Bit offset in the low 24 bits, bitfield size in the high 8.
            let bits = (word & 0x00ff_ffff) + delta;
            if bits > 0x00ff_ffff {
                return Err(format!(
                    "{strukt}.{member}: bit offset {bits} overflows 24 bits"
                ));
            }
            (word & 0xff00_0000) | bits
        } else {
            word.checked_add(delta)
                .ok_or_else(|| format!("{strukt}.{member}: bit offset overflows"))?
        };
        out[at..at + 4].copy_from_slice(&moved.to_le_bytes());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny BTF: `int`, `struct inode { int i_mode; int i_size; }` (plain
    /// offsets), `struct inode` again with `kind_flag` (a 3-bit bitfield before
    /// `i_size`), and an enum in between that must be skipped over.
    #[expect(
        clippy::cast_possible_truncation,
        reason = "a BTF of a few dozen bytes: its lengths fit u32"
    )]
    fn sample() -> Vec<u8> {
        let strings = b"\0int\0inode\0i_mode\0i_size\0e\0A\0".to_vec();
        let s = |n: &str| {
            let needle = [b"\0", n.as_bytes(), b"\0"].concat();
            strings
                .windows(needle.len())
                .position(|w| w == needle)
                .unwrap() as u32
                + 1
        };
        let mut t = Vec::new();
        let mut put = |v: &[u32]| v.iter().for_each(|x| t.extend_from_slice(&x.to_le_bytes()));
        put(&[s("int"), KIND_INT << 24, 4, 32]); // [1] int
        put(&[s("e"), (KIND_ENUM << 24) | 1, 4, s("A"), 7]); // [2] enum e { A = 7 }
        put(&[s("inode"), (KIND_STRUCT << 24) | 2, 16]); // [3]
        put(&[s("i_mode"), 1, 0, s("i_size"), 1, 64]);
        put(&[s("inode"), (1 << 31) | (KIND_STRUCT << 24) | 2, 16]); // [4] kind_flag
        put(&[s("i_mode"), 1, (3 << 24) | 5, s("i_size"), 1, 64]);
        let mut b = Vec::new();
        let mut hdr = |v: &[u32]| v.iter().for_each(|x| b.extend_from_slice(&x.to_le_bytes()));
        hdr(&[
            u32::from(MAGIC) | (1 << 16),
            24,
            0,
            t.len() as u32,
            t.len() as u32,
            strings.len() as u32,
        ]);
        b.extend_from_slice(&t);
        b.extend_from_slice(&strings);
        b
    }

    #[test]
    fn reads_and_moves_plain_and_bitfield_offsets() {
        let b = sample();
        assert_eq!(member_offset(&b, "inode", "i_size"), Ok(8));
        assert_eq!(member_offset(&b, "inode", "i_mode"), Ok(0));
        let moved = move_member(&b, "inode", "i_size", 8).unwrap();
        assert_eq!(member_offset(&moved, "inode", "i_size"), Ok(16));
        assert_eq!(member_offset(&moved, "inode", "i_mode"), Ok(0));
        // Only the two offset words changed; the bitfield size byte survived.
        let changed: Vec<usize> = (0..b.len()).filter(|&i| b[i] != moved[i]).collect();
        assert_eq!(changed.len(), 2, "{changed:?}");
        let words = member_offset_words(&moved, "inode", "i_mode").unwrap();
        assert_eq!(words[1], (words[1].0, true));
        assert_eq!(u32_at(&moved, words[1].0).unwrap(), (3 << 24) | 5);
        // A bitfield member moves its bit offset and keeps its size.
        let bit = move_member(&b, "inode", "i_mode", 8).unwrap();
        assert_eq!(u32_at(&bit, words[1].0).unwrap(), (3 << 24) | (5 + 64));
        assert_eq!(u32_at(&bit, words[0].0).unwrap(), 64);
    }

    #[test]
    fn bad_input_is_an_error() {
        let b = sample();
        assert!(
            member_offset(&b, "inode", "i_nope")
                .unwrap_err()
                .contains("i_nope")
        );
        assert!(move_member(&b, "dentry", "i_size", 8).is_err());
        assert!(layout(&b[..10]).is_err());
        let mut wrong = b.clone();
        wrong[0] = 0;
        assert!(layout(&wrong).unwrap_err().contains("magic"));
        // A type section claiming more than the file holds.
        let mut cut = b.clone();
        cut[12..16].copy_from_slice(&10_000u32.to_le_bytes());
        assert!(member_offset(&cut, "inode", "i_size").is_err());
    }

    /// The running kernel's BTF: the patch moves exactly `inode.i_size`.
    #[test]
    fn doctors_the_running_kernels_btf() {
        let path = KERNEL_BTF;
        let b = std::fs::read(path)
            .unwrap_or_else(|e| panic!("{path}: {e} (the tests need a BTF kernel)"));
        let before = member_offset(&b, "inode", "i_size").unwrap();
        let moved = move_member(&b, "inode", "i_size", 8).unwrap();
        assert_eq!(
            member_offset(&moved, "inode", "i_size").unwrap(),
            before + 8
        );
        assert_eq!(
            member_offset(&moved, "inode", "i_mode"),
            member_offset(&b, "inode", "i_mode")
        );
        let changed = (0..b.len()).filter(|&i| b[i] != moved[i]).count();
        assert!((1..=4).contains(&changed), "{changed} bytes changed");
        let id = typedef_id(&b, "btf_trace_sched_process_exec").unwrap();
        assert!(id > 1, "{id}");
        assert!(typedef_id(&b, "no_such_typedef").is_err());
        // Eprinted for a comparison with `bpftool btf dump file` by hand.
        eprintln!("btf_trace_sched_process_exec: [{id}]");
    }
}
