//! Minimal reader for raw kernel BTF (`/sys/kernel/btf/vmlinux`).
//!
//! The eBPF programs carry no CO-RE relocations, so at load time we look up the
//! byte offsets of the kernel struct fields they read in the running kernel's
//! BTF and hand them to the programs.
//!
//! We parse BTF ourselves instead of using the `btf-rs` crate because that
//! crate is LGPL-2.1-or-later, while this binary is MIT OR Apache-2.0 and
//! statically linked. Only what offset lookups need is kept: struct/union
//! members, arrays, ints, the type wrappers and enums' values; everything
//! else is skipped after bounds checking. Format reference: the kernel's
//! `Documentation/bpf/btf.rst`.
// Outside input: an index out of bounds here is a crash an attacker chooses.
#![warn(clippy::indexing_slicing)]

use anyhow::{Context, Result, anyhow, bail};
use std::collections::HashMap;
use std::ffi::CStr;
use std::ops::Range;
use std::path::Path;

const BTF_MAGIC: u16 = 0xeb9f;
const HEADER_LEN: usize = 24;
/// The kernel's BTF is for a 64-bit target; BTF itself does not record pointer width.
const POINTER_SIZE: u32 = 8;
/// Bounds recursion through wrapper chains and anonymous members so that a
/// corrupt (cyclic) blob yields an error instead of a stack overflow.
const MAX_DEPTH: u32 = 64;
/// Caps members visited per lookup, so cyclic anonymous members in corrupt
/// input cannot make a search exponential.
const SEARCH_BUDGET: u32 = 1 << 20;
/// How many existing member names a "field not found" error lists.
const MAX_LISTED_MEMBERS: usize = 12;

const KIND_INT: u8 = 1;
const KIND_PTR: u8 = 2;
const KIND_ARRAY: u8 = 3;
const KIND_STRUCT: u8 = 4;
const KIND_UNION: u8 = 5;
const KIND_ENUM: u8 = 6;
const KIND_FWD: u8 = 7;
const KIND_TYPEDEF: u8 = 8;
const KIND_VOLATILE: u8 = 9;
const KIND_CONST: u8 = 10;
const KIND_RESTRICT: u8 = 11;
const KIND_FUNC: u8 = 12;
const KIND_FUNC_PROTO: u8 = 13;
const KIND_VAR: u8 = 14;
const KIND_DATASEC: u8 = 15;
const KIND_FLOAT: u8 = 16;
const KIND_DECL_TAG: u8 = 17;
const KIND_TYPE_TAG: u8 = 18;
const KIND_ENUM64: u8 = 19;

/// Parsed BTF. The raw bytes stay as they are; what parsing adds is where
/// each type's record starts and a name index. Types and members are read
/// from the bytes when a lookup needs them: decoding every type of a kernel
/// (over 100,000) into structures took three times the file's 5.5 MiB, and
/// that parse was the sensor's peak memory.
#[derive(Debug)]
pub struct Btf {
    bytes: Vec<u8>,
    big_endian: bool,
    /// The string section, within `bytes`.
    strings: Range<usize>,
    /// Where the record of each type id starts in `bytes`; entry 0 stands for `void`.
    records: Vec<u32>,
    /// Struct/union name -> type id, built once at parse time.
    by_name: HashMap<Box<[u8]>, u32>,
    /// Typedef name -> type id, the fallback for names like `kuid_t` that
    /// only exist as a typedef of an anonymous struct.
    typedefs: HashMap<Box<[u8]>, u32>,
    /// Enum name -> type id (ENUM and ENUM64).
    enums: HashMap<Box<[u8]>, u32>,
}

#[derive(Clone, Copy)]
struct Type {
    kind: u8,
    name_off: u32,
    /// `size` for sized kinds, referenced type id for wrappers and pointers.
    size_or_type: u32,
    extra: Extra,
}

#[derive(Clone, Copy)]
enum Extra {
    None,
    /// The INT encoding word (bit offset and bit count).
    Int(u32),
    Array {
        elem: u32,
        nelems: u32,
    },
    /// Where the member records start in `Btf::bytes`, how many, and the
    /// struct's `kind_flag` (bitfield sizes in the offsets).
    Members {
        at: u32,
        len: u16,
        kind_flag: bool,
    },
    /// Where an enum's values start in `Btf::bytes`, how many, whether they
    /// are 64-bit (ENUM64) and signed (the `kind_flag`).
    Enumerators {
        at: u32,
        len: u16,
        wide: bool,
        signed: bool,
    },
}

#[derive(Clone, Copy)]
struct Member {
    name_off: u32,
    type_id: u32,
    bit_offset: u32,
    /// Non-zero only for bitfields encoded with the struct's `kind_flag`.
    bitfield_size: u32,
}

/// Endian-aware, bounds-checked cursor over the input bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    big_endian: bool,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N]> {
        let end = self
            .pos
            .checked_add(N)
            .ok_or_else(|| anyhow!("BTF offset overflow"))?;
        let chunk = self
            .bytes
            .get(self.pos..end)
            .ok_or_else(|| anyhow!("BTF truncated: need {N} bytes at offset {}", self.pos))?;
        let mut out = [0u8; N];
        out.copy_from_slice(chunk);
        self.pos = end;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32> {
        let b = self.take()?;
        Ok(if self.big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    }

    fn skip(&mut self, n: usize) -> Result<()> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| anyhow!("BTF truncated: need {n} bytes at offset {}", self.pos))?;
        self.pos = end;
        Ok(())
    }
}

/// The running kernel's own BTF.
pub const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Where a field path ended up: absolute bit offset and the member's type.
struct Resolved {
    bit_offset: u64,
    type_id: u32,
}

impl Btf {
    /// Reads and parses raw BTF from a file; errors name the path.
    pub fn from_file(path: &Path) -> Result<Btf> {
        let bytes =
            std::fs::read(path).with_context(|| format!("reading BTF from {}", path.display()))?;
        Self::from_vec(bytes).with_context(|| format!("parsing BTF from {}", path.display()))
    }

    /// Parses raw BTF bytes (header, type section, string section), in either
    /// byte order: the magic tells which.
    pub fn from_bytes(bytes: &[u8]) -> Result<Btf> {
        Self::from_vec(bytes.to_vec())
    }

    fn from_vec(bytes: Vec<u8>) -> Result<Btf> {
        let magic = *bytes
            .first_chunk::<2>()
            .ok_or_else(|| anyhow!("BTF truncated: no magic"))?;
        let big_endian = match magic {
            m if u16::from_le_bytes(m) == BTF_MAGIC => false,
            m if u16::from_be_bytes(m) == BTF_MAGIC => true,
            m => bail!(
                "not BTF: bad magic {:#06x} (expected {BTF_MAGIC:#06x})",
                u16::from_le_bytes(m)
            ),
        };
        let mut r = Reader {
            bytes: &bytes,
            pos: 2,
            big_endian,
        };
        let header = (|| -> Result<_> {
            let version = r.u8()?;
            let _flags = r.u8()?;
            let hdr_len = r.u32()?;
            let type_off = r.u32()?;
            let type_len = r.u32()?;
            let str_off = r.u32()?;
            let str_len = r.u32()?;
            Ok((version, hdr_len, type_off, type_len, str_off, str_len))
        })()
        .context("BTF header truncated")?;
        let (version, hdr_len, type_off, type_len, str_off, str_len) = header;
        if version != 1 {
            bail!("unsupported BTF version {version}");
        }
        let hdr_len = hdr_len as usize;
        if hdr_len < HEADER_LEN {
            bail!("BTF header length {hdr_len} is shorter than {HEADER_LEN}");
        }
        let section = |off: u32, len: u32, what: &str| -> Result<Range<usize>> {
            let start = hdr_len.checked_add(off as usize);
            let end = start.and_then(|s| s.checked_add(len as usize));
            start
                .zip(end)
                .filter(|&(_, e)| e <= bytes.len())
                .map(|(s, e)| s..e)
                .ok_or_else(|| {
                    anyhow!(
                        "BTF {what} section (offset {off}, length {len}) exceeds the {} input bytes",
                        bytes.len()
                    )
                })
        };
        let types = section(type_off, type_len, "type")?;
        let strings = section(str_off, str_len, "string")?;
        // Record positions are u32: the sections' lengths are.
        u32::try_from(bytes.len()).map_err(|_| anyhow!("BTF larger than 4 GiB"))?;
        let mut btf = Btf {
            records: vec![0],
            bytes: Vec::new(),
            big_endian,
            strings,
            by_name: HashMap::new(),
            typedefs: HashMap::new(),
            enums: HashMap::new(),
        };
        btf.records = record_starts(&bytes, types, big_endian)?;
        btf.bytes = bytes;
        btf.build_index()?;
        Ok(btf)
    }

    /// Indexes structs/unions (and typedefs) by name. A FWD never enters the
    /// index; a definition with members replaces an earlier empty one,
    /// otherwise the first definition wins.
    fn build_index(&mut self) -> Result<()> {
        let mut by_name: HashMap<Box<[u8]>, u32> = HashMap::new();
        let mut typedefs: HashMap<Box<[u8]>, u32> = HashMap::new();
        let mut enums: HashMap<Box<[u8]>, u32> = HashMap::new();
        // Type ids are bounded by u32 because the section length is a u32.
        let count = u32::try_from(self.records.len()).context("more BTF types than u32 ids")?;
        for id in 1..count {
            let ty = self.ty(id)?;
            let indexed = matches!(
                ty.kind,
                KIND_STRUCT | KIND_UNION | KIND_TYPEDEF | KIND_ENUM | KIND_ENUM64
            );
            if !indexed || ty.name_off == 0 {
                continue;
            }
            let name = self
                .name_bytes(ty.name_off)
                .with_context(|| format!("name of BTF type id {id}"))?;
            if name.is_empty() {
                continue;
            }
            if ty.kind == KIND_TYPEDEF {
                typedefs.entry(name.into()).or_insert(id);
                continue;
            }
            if matches!(ty.kind, KIND_ENUM | KIND_ENUM64) {
                // A definition with values wins over an earlier empty one.
                let entry = enums.entry(name.into()).or_insert(id);
                if self.enum_count(*entry) == 0 {
                    *entry = id;
                }
                continue;
            }
            match by_name.get_mut(name) {
                None => {
                    by_name.insert(name.into(), id);
                }
                Some(existing) => {
                    if self.member_count(*existing) == 0 && self.member_count(id) > 0 {
                        *existing = id;
                    }
                }
            }
        }
        self.by_name = by_name;
        self.typedefs = typedefs;
        self.enums = enums;
        Ok(())
    }

    /// The type id of the typedef `name`, if there is one.
    pub fn typedef_id(&self, name: &str) -> Option<u32> {
        self.typedefs.get(name.as_bytes()).copied()
    }

    /// The type id of the function `name` (a FUNC), by a walk over every
    /// type: one look-up, made only in prevent mode, not worth an index.
    pub fn func_id(&self, name: &str) -> Option<u32> {
        let count = u32::try_from(self.records.len()).ok()?;
        (1..count).find(|&id| {
            self.ty(id).is_ok_and(|ty| {
                ty.kind == KIND_FUNC
                    && ty.name_off != 0
                    && self
                        .name_bytes(ty.name_off)
                        .is_ok_and(|n| n == name.as_bytes())
            })
        })
    }

    /// The value of `enumerator` in the enum named `enum_name`, e.g.
    /// `("cgroup_subsys_id", "pids_cgrp_id")`.
    pub fn enum_value(&self, enum_name: &str, enumerator: &str) -> Result<i64> {
        let id = *self
            .enums
            .get(enum_name.as_bytes())
            .ok_or_else(|| anyhow!("enum `{enum_name}` not found in BTF"))?;
        let Extra::Enumerators {
            at,
            len,
            wide,
            signed,
        } = self.ty(id)?.extra
        else {
            bail!("type id {id} is not an enum");
        };
        let mut r = self.reader(at as usize);
        for _ in 0..len {
            let name_off = r.u32()?;
            let lo = r.u32()?;
            // kind_flag marks a signed enum.
            let value = if wide {
                let hi = r.u32()?;
                ((u64::from(hi) << 32) | u64::from(lo)).cast_signed()
            } else if signed {
                i64::from(lo.cast_signed())
            } else {
                i64::from(lo)
            };
            if self.name_bytes(name_off)? == enumerator.as_bytes() {
                return Ok(value);
            }
        }
        bail!("enum `{enum_name}` has no value `{enumerator}`")
    }

    fn enum_count(&self, id: u32) -> usize {
        match self.ty(id).map(|t| t.extra) {
            Ok(Extra::Enumerators { len, .. }) => usize::from(len),
            _ => 0,
        }
    }

    /// Byte offset of a field inside a named struct (or union), e.g.
    /// `("task_struct", "pid")`, or a dotted path through nested named members,
    /// e.g. `("dentry", "d_name.len")`. Members of anonymous structs/unions are
    /// searched transparently, as in C. `struct_name` may also be a typedef of
    /// a struct (e.g. `kuid_t`) when no struct of that name exists.
    pub fn member_offset(&self, struct_name: &str, field_path: &str) -> Result<u32> {
        let resolved = self.resolve(struct_name, field_path)?;
        u32::try_from(resolved.bit_offset / 8)
            .map_err(|_| anyhow!("offset of `{struct_name}.{field_path}` does not fit in u32"))
    }

    /// Size in bytes of a member's type (pointers count as 8 bytes). Same
    /// lookup rules and errors as [`Btf::member_offset`].
    pub fn member_size(&self, struct_name: &str, field_path: &str) -> Result<u32> {
        let resolved = self.resolve(struct_name, field_path)?;
        self.type_size(resolved.type_id, 0)
            .with_context(|| format!("size of `{struct_name}.{field_path}`"))
    }

    /// Size in bytes of a named struct (or union).
    pub fn struct_size(&self, struct_name: &str) -> Result<u32> {
        let id = self.lookup_struct(struct_name)?;
        Ok(self.ty(id)?.size_or_type)
    }

    /// A struct/union by tag name, else a typedef naming one (e.g. `kuid_t`).
    fn lookup_struct(&self, struct_name: &str) -> Result<u32> {
        let key = struct_name.as_bytes();
        if let Some(&id) = self.by_name.get(key) {
            return Ok(id);
        }
        if let Some(&id) = self.typedefs.get(key) {
            let target = self.strip_wrappers(id)?;
            if matches!(self.ty(target)?.kind, KIND_STRUCT | KIND_UNION) {
                return Ok(target);
            }
        }
        bail!("struct `{struct_name}` not found in BTF")
    }

    fn resolve(&self, struct_name: &str, field_path: &str) -> Result<Resolved> {
        let mut type_id = self.lookup_struct(struct_name)?;
        let full = || format!("`{struct_name}.{field_path}`");
        if field_path.is_empty() {
            bail!("empty field path for struct `{struct_name}`");
        }
        let mut bit_offset = 0u64;
        let mut parent = struct_name.to_owned();
        for component in field_path.split('.') {
            if component.is_empty() {
                bail!("empty component in field path {}", full());
            }
            let container = self.strip_wrappers(type_id)?;
            let cty = self.ty(container)?;
            if !matches!(cty.kind, KIND_STRUCT | KIND_UNION) {
                bail!(
                    "cannot resolve {}: `{parent}` is a {}, not a struct/union",
                    full(),
                    kind_name(cty.kind)
                );
            }
            let mut budget = SEARCH_BUDGET;
            let (member, rel) = self
                .find_member(container, component.as_bytes(), 0, &mut budget)?
                .ok_or_else(|| {
                    anyhow!(
                        "field `{component}` of {} not found; existing members include: {}",
                        full(),
                        self.member_names(container).join(", ")
                    )
                })?;
            if self.is_bitfield(&member)? {
                bail!(
                    "{} is a bitfield; only byte-aligned fields are supported",
                    full()
                );
            }
            bit_offset = bit_offset
                .checked_add(rel)
                .ok_or_else(|| anyhow!("offset of {} overflows", full()))?;
            type_id = member.type_id;
            parent.push('.');
            parent.push_str(component);
        }
        if !bit_offset.is_multiple_of(8) {
            bail!(
                "{} is at bit offset {bit_offset}, which is not byte aligned",
                full()
            );
        }
        Ok(Resolved {
            bit_offset,
            type_id,
        })
    }

    /// Finds a named member, descending into anonymous struct/union members;
    /// returns it with its bit offset relative to `struct_id`.
    fn find_member(
        &self,
        struct_id: u32,
        name: &[u8],
        depth: u32,
        budget: &mut u32,
    ) -> Result<Option<(Member, u64)>> {
        if depth > MAX_DEPTH {
            bail!("anonymous members nested too deeply (cyclic BTF?)");
        }
        for member in self.members_of(struct_id)? {
            *budget = budget
                .checked_sub(1)
                .ok_or_else(|| anyhow!("member search exceeded its budget (cyclic BTF?)"))?;
            let member_name = self.name_bytes(member.name_off)?;
            if member_name == name {
                return Ok(Some((member, u64::from(member.bit_offset))));
            }
            if member_name.is_empty() {
                let inner = self.strip_wrappers(member.type_id)?;
                if matches!(self.ty(inner)?.kind, KIND_STRUCT | KIND_UNION)
                    && let Some((found, rel)) = self.find_member(inner, name, depth + 1, budget)?
                {
                    return Ok(Some((found, u64::from(member.bit_offset) + rel)));
                }
            }
        }
        Ok(None)
    }

    /// Names reachable from a struct (anonymous members flattened), for error messages.
    fn member_names(&self, struct_id: u32) -> Vec<String> {
        let mut names = Vec::new();
        let mut budget = SEARCH_BUDGET;
        self.collect_names(struct_id, &mut names, 0, &mut budget);
        if names.len() > MAX_LISTED_MEMBERS {
            names.truncate(MAX_LISTED_MEMBERS);
            names.push("...".to_owned());
        }
        if names.is_empty() {
            names.push("(none)".to_owned());
        }
        names
    }

    fn collect_names(&self, struct_id: u32, names: &mut Vec<String>, depth: u32, budget: &mut u32) {
        let Ok(members) = self.members_of(struct_id) else {
            return;
        };
        for member in members {
            if depth > MAX_DEPTH || names.len() > MAX_LISTED_MEMBERS || *budget == 0 {
                return;
            }
            *budget -= 1;
            match self.name_bytes(member.name_off) {
                Ok([]) => {
                    if let Ok(inner) = self.strip_wrappers(member.type_id) {
                        self.collect_names(inner, names, depth + 1, budget);
                    }
                }
                Ok(name) => names.push(String::from_utf8_lossy(name).into_owned()),
                Err(_) => {}
            }
        }
    }

    /// True for bitfields in either encoding: the struct's `kind_flag` (explicit
    /// bit size) or, without it, an INT whose encoding is narrower than its size.
    fn is_bitfield(&self, member: &Member) -> Result<bool> {
        if member.bitfield_size != 0 {
            return Ok(true);
        }
        let ty = self.ty(self.strip_wrappers(member.type_id)?)?;
        if let Extra::Int(encoding) = ty.extra {
            let bits = encoding & 0xff;
            let bit_off = (encoding >> 16) & 0xff;
            return Ok(bit_off != 0 || u64::from(bits) != u64::from(ty.size_or_type) * 8);
        }
        Ok(false)
    }

    /// Follows typedef/volatile/const/restrict/`type_tag` to the underlying type.
    fn strip_wrappers(&self, mut id: u32) -> Result<u32> {
        for _ in 0..MAX_DEPTH {
            let ty = self.ty(id)?;
            match ty.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = ty.size_or_type;
                }
                _ => return Ok(id),
            }
        }
        bail!("type wrapper chain from id {id} too long (cyclic BTF?)")
    }

    fn type_size(&self, id: u32, depth: u32) -> Result<u32> {
        if depth > MAX_DEPTH {
            bail!("type nesting too deep at id {id} (cyclic BTF?)");
        }
        let id = self.strip_wrappers(id)?;
        let ty = self.ty(id)?;
        match ty.kind {
            KIND_INT | KIND_STRUCT | KIND_UNION | KIND_ENUM | KIND_ENUM64 | KIND_FLOAT => {
                Ok(ty.size_or_type)
            }
            KIND_PTR => Ok(POINTER_SIZE),
            KIND_ARRAY => match ty.extra {
                Extra::Array { elem, nelems } => self
                    .type_size(elem, depth + 1)?
                    .checked_mul(nelems)
                    .ok_or_else(|| anyhow!("array type id {id} size overflows u32")),
                _ => bail!("array type id {id} without array data"),
            },
            other => bail!("type id {id} ({}) has no size", kind_name(other)),
        }
    }

    fn ty(&self, id: u32) -> Result<Type> {
        match self.records.get(id as usize) {
            Some(&at) if id != 0 => decode_type(&self.reader(at as usize)),
            Some(_) => bail!("type id 0 (void) has no layout"),
            None => bail!(
                "type id {id} out of range ({} types)",
                self.records.len() - 1
            ),
        }
    }

    fn reader(&self, pos: usize) -> Reader<'_> {
        Reader {
            bytes: &self.bytes,
            pos,
            big_endian: self.big_endian,
        }
    }

    fn member_count(&self, id: u32) -> usize {
        match self.ty(id).map(|t| t.extra) {
            Ok(Extra::Members { len, .. }) => usize::from(len),
            _ => 0,
        }
    }

    fn members_of(&self, id: u32) -> Result<Vec<Member>> {
        match self.ty(id)?.extra {
            Extra::Members { at, len, kind_flag } => {
                let mut r = self.reader(at as usize);
                (0..len)
                    .map(|_| {
                        let name_off = r.u32()?;
                        let type_id = r.u32()?;
                        let offset = r.u32()?;
                        let (bit_offset, bitfield_size) = if kind_flag {
                            (offset & 0x00ff_ffff, offset >> 24)
                        } else {
                            (offset, 0)
                        };
                        Ok(Member {
                            name_off,
                            type_id,
                            bit_offset,
                            bitfield_size,
                        })
                    })
                    .collect()
            }
            _ => bail!("type id {id} is not a struct/union"),
        }
    }

    /// NUL-terminated string at `off` in the string section.
    fn name_bytes(&self, off: u32) -> Result<&[u8]> {
        let tail = self
            .bytes
            .get(self.strings.clone())
            .and_then(|s| s.get(off as usize..))
            .ok_or_else(|| anyhow!("string offset {off} beyond string section"))?;
        let name = CStr::from_bytes_until_nul(tail)
            .map_err(|_| anyhow!("string at offset {off} is not NUL-terminated"))?;
        Ok(name.to_bytes())
    }
}

/// Where each type record starts, walking the type section once (every
/// record is checked to be whole and of a known kind); entry 0 is `void`.
fn record_starts(bytes: &[u8], types: Range<usize>, big_endian: bool) -> Result<Vec<u32>> {
    let mut starts = vec![0];
    let mut r = Reader {
        bytes: bytes
            .get(..types.end)
            .ok_or_else(|| anyhow!("type section ends at {}, beyond the data", types.end))?,
        pos: types.start,
        big_endian,
    };
    while r.pos < types.end {
        let id = starts.len();
        starts.push(u32::try_from(r.pos).context("BTF of 4 GiB or more")?);
        let ty = decode_type(&r).with_context(|| format!("at BTF type id {id}"))?;
        r.skip(12 + extra_len(ty.kind, vlen_of(&r)?)?)
            .with_context(|| format!("at BTF type id {id}"))?;
    }
    Ok(starts)
}

/// The vlen of the record at the reader's position.
fn vlen_of(r: &Reader<'_>) -> Result<usize> {
    let mut r = Reader {
        pos: r.pos + 4,
        ..*r
    };
    Ok((r.u32()? & 0xffff) as usize)
}

/// Bytes after the 12-byte common part of a record of `kind`.
fn extra_len(kind: u8, vlen: usize) -> Result<usize> {
    Ok(match kind {
        KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
        KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
        | KIND_FUNC | KIND_FLOAT | KIND_TYPE_TAG => 0,
        KIND_ARRAY => 12,
        KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => vlen * 12,
        KIND_ENUM | KIND_FUNC_PROTO => vlen * 8,
        other => bail!("unknown BTF kind {other}"),
    })
}

/// The type whose record starts at the reader's position.
fn decode_type(r: &Reader<'_>) -> Result<Type> {
    let mut r = Reader { ..*r };
    let name_off = r.u32()?;
    let info = r.u32()?;
    let size_or_type = r.u32()?;
    let vlen = (info & 0xffff) as u16;
    let kind = ((info >> 24) & 0x1f) as u8;
    let extra = match kind {
        KIND_INT => Extra::Int(r.u32()?),
        KIND_ARRAY => {
            let elem = r.u32()?;
            let _index_type = r.u32()?;
            let nelems = r.u32()?;
            Extra::Array { elem, nelems }
        }
        KIND_STRUCT | KIND_UNION => {
            // The members must be there: checked once when the records are walked.
            let need = usize::from(vlen) * 12;
            if r.pos
                .checked_add(need)
                .is_none_or(|end| end > r.bytes.len())
            {
                bail!("BTF truncated: need {need} bytes at offset {}", r.pos);
            }
            Extra::Members {
                at: u32::try_from(r.pos).context("BTF of 4 GiB or more")?,
                len: vlen,
                kind_flag: info >> 31 != 0,
            }
        }
        KIND_ENUM | KIND_ENUM64 => {
            let need = extra_len(kind, usize::from(vlen))?;
            if r.pos
                .checked_add(need)
                .is_none_or(|end| end > r.bytes.len())
            {
                bail!("BTF truncated: need {need} bytes at offset {}", r.pos);
            }
            Extra::Enumerators {
                at: u32::try_from(r.pos).context("BTF of 4 GiB or more")?,
                len: vlen,
                wide: kind == KIND_ENUM64,
                signed: info >> 31 != 0,
            }
        }
        _ => {
            extra_len(kind, usize::from(vlen))?;
            Extra::None
        }
    };
    Ok(Type {
        kind,
        name_off,
        size_or_type,
        extra,
    })
}

fn kind_name(kind: u8) -> &'static str {
    match kind {
        0 => "void",
        KIND_INT => "int",
        KIND_PTR => "pointer",
        KIND_ARRAY => "array",
        KIND_STRUCT => "struct",
        KIND_UNION => "union",
        KIND_ENUM => "enum",
        KIND_FWD => "forward declaration",
        KIND_TYPEDEF => "typedef",
        KIND_VOLATILE => "volatile",
        KIND_CONST => "const",
        KIND_RESTRICT => "restrict",
        KIND_FUNC => "function",
        KIND_FUNC_PROTO => "function prototype",
        KIND_VAR => "variable",
        KIND_DATASEC => "data section",
        KIND_FLOAT => "float",
        KIND_DECL_TAG => "decl tag",
        KIND_TYPE_TAG => "type tag",
        KIND_ENUM64 => "enum64",
        _ => "unknown kind",
    }
}

// The BTF writer: only the tests and the fuzz seeds build it, never the sensor.
#[cfg(any(test, feature = "fuzz-seeds"))]
#[doc(hidden)]
pub mod synthetic;

#[cfg(test)]
mod tests;
