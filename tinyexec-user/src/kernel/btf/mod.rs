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

/// Raw BTF blobs built in code, for the tests and as the fuzzer's seeds: a
/// real kernel's BTF is not in the repository.
#[doc(hidden)]
pub mod synthetic {
    #![expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "a BTF of a few types: its lengths fit u32; an enum64 value is split into its words"
    )]
    use super::{
        BTF_MAGIC, KIND_CONST, KIND_ENUM, KIND_ENUM64, KIND_PTR, KIND_RESTRICT, KIND_TYPE_TAG,
        KIND_TYPEDEF, KIND_VOLATILE,
    };

    /// Builds raw BTF blobs so the parser is tested on layouts we control.
    #[derive(Debug)]
    pub struct Writer {
        /// Type section as u32 words (every BTF type record is word-sized).
        words: Vec<u32>,
        strings: Vec<u8>,
        next_id: u32,
    }

    /// (name, type id, bit offset, bitfield size)
    pub type M<'a> = (&'a str, u32, u32, u32);

    impl Default for Writer {
        fn default() -> Self {
            Self::new()
        }
    }

    impl Writer {
        pub fn new() -> Self {
            Writer {
                words: Vec::new(),
                strings: vec![0],
                next_id: 1,
            }
        }

        pub fn s(&mut self, name: &str) -> u32 {
            if name.is_empty() {
                return 0;
            }
            let off = self.strings.len() as u32;
            self.strings.extend_from_slice(name.as_bytes());
            self.strings.push(0);
            off
        }

        pub fn raw(
            &mut self,
            name: &str,
            kind: u32,
            kind_flag: bool,
            vlen: u32,
            sot: u32,
            extra: &[u32],
        ) -> u32 {
            let name_off = self.s(name);
            let info = (u32::from(kind_flag) << 31) | (kind << 24) | vlen;
            self.words.extend_from_slice(&[name_off, info, sot]);
            self.words.extend_from_slice(extra);
            self.next_id += 1;
            self.next_id - 1
        }

        pub fn int(&mut self, name: &str, size: u32) -> u32 {
            self.raw(name, 1, false, 0, size, &[size * 8])
        }

        /// INT with an encoding narrower than its size: the pre-kind_flag bitfield form.
        pub fn int_bits(&mut self, name: &str, size: u32, bits: u32, bit_off: u32) -> u32 {
            self.raw(name, 1, false, 0, size, &[(bit_off << 16) | bits])
        }

        pub fn wrap(&mut self, kind: u8, name: &str, target: u32) -> u32 {
            self.raw(name, u32::from(kind), false, 0, target, &[])
        }

        pub fn array(&mut self, elem: u32, index: u32, n: u32) -> u32 {
            self.raw("", 3, false, 0, 0, &[elem, index, n])
        }

        pub fn fwd(&mut self, name: &str) -> u32 {
            self.raw(name, 7, false, 0, 0, &[])
        }

        pub fn composite(&mut self, union: bool, name: &str, size: u32, members: &[M<'_>]) -> u32 {
            let kind_flag = members.iter().any(|m| m.3 != 0);
            let mut extra = Vec::new();
            for &(mname, ty, off, bits) in members {
                let off = if kind_flag { (bits << 24) | off } else { off };
                extra.extend_from_slice(&[self.s(mname), ty, off]);
            }
            let kind = if union { 5 } else { 4 };
            self.raw(name, kind, kind_flag, members.len() as u32, size, &extra)
        }

        pub fn strukt(&mut self, name: &str, size: u32, members: &[M<'_>]) -> u32 {
            self.composite(false, name, size, members)
        }

        pub fn union(&mut self, name: &str, size: u32, members: &[M<'_>]) -> u32 {
            self.composite(true, name, size, members)
        }

        /// An enum of `(name, value)`s: ENUM (signed when a value is negative)
        /// when every value fits 32 bits, else ENUM64.
        pub fn enumeration(&mut self, name: &str, values: &[(&str, i64)]) -> u32 {
            let wide = values
                .iter()
                .any(|v| i32::try_from(v.1).is_err() && u32::try_from(v.1).is_err());
            let signed = values.iter().any(|v| v.1 < 0);
            let mut extra = Vec::new();
            for &(vname, value) in values {
                extra.push(self.s(vname));
                extra.push(value as u32);
                if wide {
                    extra.push((value >> 32) as u32);
                }
            }
            let (kind, size) = if wide {
                (KIND_ENUM64, 8)
            } else {
                (KIND_ENUM, 4)
            };
            self.raw(name, kind.into(), signed, values.len() as u32, size, &extra)
        }

        /// One of each kind the lookups never use, so their skipping is exercised.
        pub fn filler(&mut self, int: u32) {
            let e = self.s("E_ONE");
            self.raw("e", 6, false, 2, 4, &[e, 1, e, 2]);
            self.raw("e64", 19, false, 1, 8, &[e, 1, 0]);
            let proto = self.raw("", 13, false, 2, int, &[0, int, 0, int]);
            self.raw("f", 12, false, 0, proto, &[]);
            let var = self.raw("v", 14, false, 0, int, &[1]);
            self.raw(".data", 15, false, 1, 8, &[var, 0, 4]);
            self.raw("double", 16, false, 0, 8, &[]);
            self.raw("tag", 17, false, 0, var, &[0xffff_ffff]);
            self.raw("user", KIND_TYPE_TAG.into(), false, 0, int, &[]);
            self.wrap(KIND_VOLATILE, "", int);
            self.wrap(KIND_RESTRICT, "", int);
        }

        pub fn bytes(&self, big_endian: bool) -> Vec<u8> {
            let put = |out: &mut Vec<u8>, w: u32| {
                out.extend_from_slice(&if big_endian {
                    w.to_be_bytes()
                } else {
                    w.to_le_bytes()
                });
            };
            let mut out = Vec::new();
            let magic = if big_endian {
                BTF_MAGIC.to_be_bytes()
            } else {
                BTF_MAGIC.to_le_bytes()
            };
            out.extend_from_slice(&magic);
            out.extend_from_slice(&[1, 0]);
            let type_len = self.words.len() as u32 * 4;
            for w in [24, 0, type_len, type_len, self.strings.len() as u32] {
                put(&mut out, w);
            }
            for &w in &self.words {
                put(&mut out, w);
            }
            out.extend_from_slice(&self.strings);
            out
        }
    }

    /// Byte offsets that differ between the two synthetic "kernels".
    #[derive(Clone, Copy, Debug)]
    pub struct Layout {
        pub pid: u32,
        pub tgid: u32,
        pub loginuid: u32,
        pub comm: u32,
        pub task_size: u32,
        /// qstr: offset of the anonymous `{hash,len}`/`hash_len` union and of `name`.
        pub q_union: u32,
        pub q_name: u32,
        /// Offsets of `len` inside the anonymous struct (`hash` takes the other slot).
        pub q_len: u32,
        pub d_parent: u32,
        pub d_name: u32,
        pub d_iname: u32,
        pub dentry_size: u32,
    }

    pub const LAYOUT_A: Layout = Layout {
        pid: 8,
        tgid: 12,
        loginuid: 16,
        comm: 24,
        task_size: 64,
        q_union: 0,
        q_name: 8,
        q_len: 4,
        d_parent: 8,
        d_name: 16,
        d_iname: 32,
        dentry_size: 64,
    };

    pub const LAYOUT_B: Layout = Layout {
        pid: 1232,
        tgid: 1236,
        loginuid: 1840,
        comm: 1952,
        task_size: 4096,
        q_union: 8,
        q_name: 0,
        q_len: 0,
        d_parent: 24,
        d_name: 48,
        d_iname: 64,
        dentry_size: 192,
    };

    /// A kernel-like type graph laid out according to `l`.
    pub fn synthetic(l: Layout) -> Writer {
        let mut w = Writer::new();
        let uint = w.int("unsigned int", 4);
        let ull = w.int("long long unsigned int", 8);
        let u32_t = w.wrap(KIND_TYPEDEF, "u32", uint);
        let u64_t = w.wrap(KIND_TYPEDEF, "u64", ull);
        let int = w.int("int", 4);
        let pid_t = w.wrap(KIND_TYPEDEF, "pid_t", int);
        let chr = w.int("char", 1);
        let cchr = w.wrap(KIND_CONST, "", chr);
        let cstr = w.wrap(KIND_PTR, "", cchr);
        w.filler(int);
        // Forward declarations before the definitions must not shadow them.
        w.fwd("task_struct");
        w.fwd("dentry");
        let q_hash = if l.q_len == 4 { 0 } else { 32 };
        let anon_s = w.strukt(
            "",
            8,
            &[("hash", u32_t, q_hash, 0), ("len", u32_t, l.q_len * 8, 0)],
        );
        let anon_u = w.union("", 8, &[("", anon_s, 0, 0), ("hash_len", u64_t, 0, 0)]);
        let qstr = w.strukt(
            "qstr",
            16,
            &[
                ("", anon_u, l.q_union * 8, 0),
                ("name", cstr, l.q_name * 8, 0),
            ],
        );
        // Ids are sequential: the pointer to dentry refers to the next type.
        let dentry_ptr = w.wrap(KIND_PTR, "", w.next_id + 2);
        let iname = w.array(chr, int, 32);
        let dentry = w.strukt(
            "dentry",
            l.dentry_size,
            &[
                ("d_flags", uint, 0, 0),
                ("d_parent", dentry_ptr, l.d_parent * 8, 0),
                ("d_name", qstr, l.d_name * 8, 0),
                ("d_iname", iname, l.d_iname * 8, 0),
            ],
        );
        assert_eq!(dentry_ptr + 2, dentry);
        let kuid_anon = w.strukt("", 4, &[("val", uint, 0, 0)]);
        let kuid_t = w.wrap(KIND_TYPEDEF, "kuid_t", kuid_anon);
        let comm = w.array(chr, int, 16);
        let qstr_t = w.wrap(KIND_TYPEDEF, "qstr_t", qstr);
        let const_qstr = w.wrap(KIND_CONST, "", qstr_t);
        let e = w.raw("state_enum", 6, false, 1, 4, &[1, 0]);
        w.strukt(
            "task_struct",
            l.task_size,
            &[
                ("state", e, 0, 0),
                ("in_execve", uint, 33, 1),
                ("pid", pid_t, l.pid * 8, 0),
                ("tgid", pid_t, l.tgid * 8, 0),
                ("loginuid", kuid_t, l.loginuid * 8, 0),
                ("comm", comm, l.comm * 8, 0),
                ("exec_name", const_qstr, (l.task_size - 16) * 8, 0),
            ],
        );
        // First full definition wins over a later one; a later full one wins over an empty one.
        w.strukt("dup", 8, &[("a", uint, 0, 0)]);
        w.strukt("dup", 8, &[("a", uint, 32, 0)]);
        w.strukt("grows", 0, &[]);
        w.strukt("grows", 16, &[("b", u64_t, 64, 0)]);
        let three_bits = w.int_bits("unsigned int", 4, 3, 0);
        w.strukt(
            "old_bits",
            8,
            &[("flags", three_bits, 0, 0), ("whole", uint, 32, 0)],
        );
        w.strukt("odd", 2, &[("nibble", chr, 4, 0)]);
        w.fwd("cgroup_subsys_id");
        w.enumeration("cgroup_subsys_id", &[]);
        w.enumeration(
            "cgroup_subsys_id",
            &[
                ("cpuset_cgrp_id", 0),
                ("memory_cgrp_id", i64::from(l.pid % 7)),
                ("pids_cgrp_id", i64::from(l.tgid % 13)),
            ],
        );
        w.enumeration("signed", &[("minus", -2), ("plus", 3)]);
        w.enumeration("wide", &[("big", 1 << 40), ("low", -1)]);
        w
    }
}

#[cfg(test)]
mod tests {
    use super::synthetic::*;
    use super::*;

    fn check_layout(btf: &Btf, l: Layout) {
        let off = |s: &str, f: &str| btf.member_offset(s, f).unwrap();
        let size = |s: &str, f: &str| btf.member_size(s, f).unwrap();
        assert_eq!(off("task_struct", "pid"), l.pid);
        assert_eq!(off("task_struct", "tgid"), l.tgid);
        assert_eq!(off("task_struct", "loginuid"), l.loginuid);
        assert_eq!(off("task_struct", "loginuid.val"), l.loginuid);
        assert_eq!(off("task_struct", "comm"), l.comm);
        assert_eq!(off("task_struct", "state"), 0);
        // Descends through const + typedef wrappers into qstr's anonymous members.
        assert_eq!(
            off("task_struct", "exec_name.len"),
            l.task_size - 16 + l.q_union + l.q_len
        );
        assert_eq!(btf.struct_size("task_struct").unwrap(), l.task_size);
        assert_eq!(size("task_struct", "pid"), 4);
        assert_eq!(size("task_struct", "state"), 4);
        assert_eq!(size("task_struct", "loginuid"), 4);
        assert_eq!(size("task_struct", "comm"), 16);
        assert_eq!(size("task_struct", "exec_name"), 16);

        assert_eq!(off("qstr", "len"), l.q_union + l.q_len);
        assert_eq!(off("qstr", "hash_len"), l.q_union);
        assert_eq!(off("qstr", "name"), l.q_name);
        assert_eq!(size("qstr", "len"), 4);
        assert_eq!(size("qstr", "hash_len"), 8);
        assert_eq!(size("qstr", "name"), 8);
        assert_eq!(btf.struct_size("qstr").unwrap(), 16);

        assert_eq!(off("dentry", "d_parent"), l.d_parent);
        assert_eq!(off("dentry", "d_name"), l.d_name);
        assert_eq!(off("dentry", "d_name.len"), l.d_name + l.q_union + l.q_len);
        assert_eq!(off("dentry", "d_name.hash_len"), l.d_name + l.q_union);
        assert_eq!(off("dentry", "d_name.name"), l.d_name + l.q_name);
        assert_eq!(off("dentry", "d_iname"), l.d_iname);
        assert_eq!(size("dentry", "d_parent"), 8);
        assert_eq!(size("dentry", "d_name"), 16);
        assert_eq!(size("dentry", "d_iname"), 32);
        assert_eq!(btf.struct_size("dentry").unwrap(), l.dentry_size);

        // Typedef of an anonymous struct is accepted as the struct name.
        assert_eq!(off("kuid_t", "val"), 0);
        assert_eq!(btf.struct_size("kuid_t").unwrap(), 4);
        assert_eq!(off("dup", "a"), 0);
        assert_eq!(off("grows", "b"), 8);
        assert_eq!(btf.struct_size("grows").unwrap(), 16);
        assert_eq!(off("old_bits", "whole"), 4);
    }

    #[test]
    fn enum_values_come_from_the_blob() {
        for big_endian in [false, true] {
            for l in [LAYOUT_A, LAYOUT_B] {
                let btf = Btf::from_bytes(&synthetic(l).bytes(big_endian)).unwrap();
                let v = |e: &str, n: &str| btf.enum_value(e, n).unwrap();
                // The definition with values, not the empty one or the forward declaration.
                assert_eq!(v("cgroup_subsys_id", "cpuset_cgrp_id"), 0);
                assert_eq!(
                    v("cgroup_subsys_id", "memory_cgrp_id"),
                    i64::from(l.pid % 7)
                );
                assert_eq!(
                    v("cgroup_subsys_id", "pids_cgrp_id"),
                    i64::from(l.tgid % 13)
                );
                assert_eq!(v("signed", "minus"), -2);
                assert_eq!(v("signed", "plus"), 3);
                assert_eq!(v("wide", "big"), 1 << 40);
                assert_eq!(v("wide", "low"), -1);
                // The filler's enum holds a name twice: the first value.
                assert_eq!(v("e", "E_ONE"), 1);
                assert_eq!(v("e64", "E_ONE"), 1);
                let msg = err_of(btf.enum_value("cgroup_subsys_id", "nope_cgrp_id"));
                assert!(msg.contains("no value `nope_cgrp_id`"), "{msg}");
                let msg = err_of(btf.enum_value("no_such_enum", "x"));
                assert!(msg.contains("enum `no_such_enum` not found"), "{msg}");
                // A struct is not an enum.
                assert!(btf.enum_value("task_struct", "pid").is_err());
            }
        }
    }

    #[test]
    fn synthetic_layouts_come_from_the_blob() {
        for big_endian in [false, true] {
            let a = Btf::from_bytes(&synthetic(LAYOUT_A).bytes(big_endian)).unwrap();
            let b = Btf::from_bytes(&synthetic(LAYOUT_B).bytes(big_endian)).unwrap();
            check_layout(&a, LAYOUT_A);
            check_layout(&b, LAYOUT_B);
            // Same names, different blobs, different answers.
            for (s, f) in [
                ("task_struct", "pid"),
                ("task_struct", "tgid"),
                ("dentry", "d_name"),
                ("dentry", "d_name.len"),
                ("dentry", "d_name.name"),
                ("qstr", "len"),
                ("qstr", "name"),
            ] {
                assert_ne!(
                    a.member_offset(s, f).unwrap(),
                    b.member_offset(s, f).unwrap(),
                    "{s}.{f}"
                );
            }
            assert_ne!(
                a.struct_size("task_struct").unwrap(),
                b.struct_size("task_struct").unwrap()
            );
        }
    }

    fn err_of<T>(r: Result<T>) -> String {
        match r {
            Ok(_) => panic!("expected an error"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn bad_magic() {
        let mut blob = synthetic(LAYOUT_A).bytes(false);
        blob[0] = 0x12;
        assert!(err_of(Btf::from_bytes(&blob)).contains("bad magic"));
        assert!(err_of(Btf::from_bytes(&[])).contains("truncated"));
    }

    #[test]
    fn truncated_header() {
        let blob = synthetic(LAYOUT_A).bytes(false);
        let msg = err_of(Btf::from_bytes(&blob[..10]));
        assert!(msg.contains("header truncated"), "{msg}");
    }

    #[test]
    fn bad_version_and_short_header_len() {
        let mut blob = synthetic(LAYOUT_A).bytes(false);
        blob[2] = 2;
        assert!(err_of(Btf::from_bytes(&blob)).contains("version 2"));
        let mut blob = synthetic(LAYOUT_A).bytes(false);
        blob[4] = 20;
        assert!(err_of(Btf::from_bytes(&blob)).contains("header length 20"));
    }

    #[test]
    fn truncated_type_section() {
        // The header promises more bytes than the input has.
        let blob = synthetic(LAYOUT_A).bytes(false);
        let type_len = u32::from_le_bytes(blob[12..16].try_into().unwrap()) as usize;
        let msg = err_of(Btf::from_bytes(&blob[..24 + type_len - 4]));
        assert!(msg.contains("type section"), "{msg}");

        // The section is complete per the header, but its last record is cut short.
        let mut w = Writer::new();
        let int = w.int("int", 4);
        w.raw("s", 4, false, 3, 12, &[0, int, 0]);
        let msg = err_of(Btf::from_bytes(&w.bytes(false)));
        assert!(
            msg.contains("type id 2") && msg.contains("truncated"),
            "{msg}"
        );
    }

    #[test]
    fn unknown_kind() {
        let mut w = Writer::new();
        w.int("int", 4);
        w.raw("mystery", 25, false, 0, 0, &[]);
        let msg = err_of(Btf::from_bytes(&w.bytes(false)));
        assert!(
            msg.contains("unknown BTF kind 25") && msg.contains("type id 2"),
            "{msg}"
        );
    }

    #[test]
    fn lookup_errors() {
        let btf = Btf::from_bytes(&synthetic(LAYOUT_A).bytes(false)).unwrap();

        let msg = err_of(btf.member_offset("no_such_struct", "x"));
        assert!(msg.contains("struct `no_such_struct` not found"), "{msg}");
        assert!(err_of(btf.struct_size("no_such_struct")).contains("not found"));

        let msg = err_of(btf.member_offset("task_struct", "pidd"));
        assert!(
            msg.contains("`pidd`") && msg.contains("task_struct.pidd"),
            "{msg}"
        );
        assert!(msg.contains("pid, tgid"), "existing members listed: {msg}");
        // Names inside anonymous members are listed too.
        let msg = err_of(btf.member_size("dentry", "d_name.nope"));
        assert!(msg.contains("hash, len, hash_len, name"), "{msg}");

        let msg = err_of(btf.member_offset("task_struct", "in_execve"));
        assert!(
            msg.contains("task_struct.in_execve") && msg.contains("bitfield"),
            "{msg}"
        );
        let msg = err_of(btf.member_size("old_bits", "flags"));
        assert!(
            msg.contains("old_bits.flags") && msg.contains("bitfield"),
            "{msg}"
        );
        let msg = err_of(btf.member_offset("odd", "nibble"));
        assert!(
            msg.contains("odd.nibble") && msg.contains("not byte aligned"),
            "{msg}"
        );

        let msg = err_of(btf.member_offset("dentry", "d_parent.d_flags"));
        assert!(
            msg.contains("`dentry.d_parent` is a pointer, not a struct/union"),
            "{msg}"
        );
        let msg = err_of(btf.member_offset("task_struct", "pid.x"));
        assert!(msg.contains("`task_struct.pid` is a int"), "{msg}");
        assert!(err_of(btf.member_offset("dentry", "")).contains("empty field path"));
        assert!(err_of(btf.member_offset("dentry", "d_name..len")).contains("empty component"));
    }

    #[test]
    fn cycles_are_errors_not_hangs() {
        let mut w = Writer::new();
        // typedef a -> typedef b -> typedef a
        let a = w.wrap(KIND_TYPEDEF, "a", 2);
        w.wrap(KIND_TYPEDEF, "b", a);
        // struct loop { <anon> of its own type twice; x }
        w.strukt("holder", 8, &[("t", a, 0, 0)]);
        w.strukt("loop", 8, &[("", 4, 0, 0), ("", 4, 0, 0)]);
        let btf = Btf::from_bytes(&w.bytes(false)).unwrap();
        assert!(err_of(btf.member_offset("holder", "t.x")).contains("cyclic"));
        assert!(err_of(btf.member_size("holder", "t")).contains("cyclic"));
        assert!(err_of(btf.member_offset("loop", "x")).contains("cyclic"));
    }

    #[test]
    fn corrupt_input_never_panics() {
        let blob = synthetic(LAYOUT_B).bytes(false);
        let probe = |bytes: &[u8]| {
            if let Ok(btf) = Btf::from_bytes(bytes) {
                for (s, f) in [
                    ("task_struct", "exec_name.len"),
                    ("dentry", "d_name.name"),
                    ("qstr", "len"),
                ] {
                    let _ = btf.member_offset(s, f);
                    let _ = btf.member_size(s, f);
                    let _ = btf.struct_size(s);
                }
            }
        };
        for len in 0..blob.len() {
            probe(&blob[..len]);
        }
        for i in 0..blob.len() {
            for flip in [0xff, 0x80, 0x01] {
                let mut bad = blob.clone();
                bad[i] ^= flip;
                probe(&bad);
            }
        }
    }

    const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

    /// The running kernel's BTF; tinyexec needs it, so a machine without it
    /// fails here, never skips.
    fn load_vmlinux() -> Btf {
        assert!(
            Path::new(VMLINUX).exists(),
            "{VMLINUX} not present: tinyexec needs a kernel with CONFIG_DEBUG_INFO_BTF"
        );
        let start = std::time::Instant::now();
        let btf = Btf::from_file(Path::new(VMLINUX)).unwrap();
        eprintln!(
            "parsed {VMLINUX} ({} types) in {:?}",
            btf.records.len() - 1,
            start.elapsed()
        );
        btf
    }

    /// Every `(struct, member path)` the loader reads (offsets.rs): the one
    /// list of the kernel fields tinyexec depends on.
    fn fields_the_loader_reads(btf: &Btf) -> Vec<(&'static str, &'static str)> {
        let (_, fields) = crate::kernel::offsets::resolve_reading(btf)
            .unwrap_or_else(|e| panic!("the loader cannot resolve this kernel: {e:#}"));
        assert!(fields.len() > 40, "{fields:?}");
        fields
    }

    #[test]
    fn running_kernel_offsets() {
        let btf = load_vmlinux();
        for (s, f) in fields_the_loader_reads(&btf) {
            let off = btf.member_offset(s, f).unwrap();
            let size = btf.member_size(s, f).unwrap();
            let total = btf.struct_size(s).unwrap();
            eprintln!("{s}.{f}: offset {off} size {size} (struct size {total})");
            // Size 0 only for a flexible array, which ends the struct.
            assert!(
                off + size <= total && (size > 0 || off == total),
                "{s}.{f}: offset {off} size {size} in a struct of {total}"
            );
        }
        // Layouts that have not changed in many kernel releases.
        assert_eq!(btf.member_offset("qstr", "name").unwrap(), 8);
        assert_eq!(btf.member_offset("path", "mnt").unwrap(), 0);
        assert_eq!(btf.member_offset("path", "dentry").unwrap(), 8);
        assert_eq!(btf.member_offset("kuid_t", "val").unwrap(), 0);
        assert_eq!(btf.member_size("linux_binprm", "buf").unwrap(), 256);
        assert_eq!(btf.member_size("task_struct", "comm").unwrap(), 16);
        assert_eq!(btf.member_size("task_struct", "pid").unwrap(), 4);
        assert_eq!(btf.struct_size("path").unwrap(), 16);
        assert_eq!(btf.struct_size("qstr").unwrap(), 16);
        assert_eq!(
            btf.member_offset("dentry", "d_name.name").unwrap(),
            btf.member_offset("dentry", "d_name").unwrap() + 8
        );
        let missing = err_of(btf.member_offset("task_struct", "no_such_field"));
        assert!(
            missing.contains("pid") || missing.contains("state"),
            "{missing}"
        );
    }

    /// A struct from `bpftool btf dump ... format raw`: size and members
    /// (name, type id, bit offset, bitfield size).
    struct RawStruct {
        name: String,
        size: u32,
        members: Vec<(String, u32, u64, u32)>,
    }

    /// bpftool's decoding: structs and unions by id, and what each typedef
    /// or qualifier (const, volatile, ...) stands for.
    struct Raw {
        composites: HashMap<u32, RawStruct>,
        aliases: HashMap<u32, u32>,
    }

    impl Raw {
        /// `id` with typedefs and qualifiers followed.
        fn strip(&self, mut id: u32) -> u32 {
            for _ in 0..32 {
                match self.aliases.get(&id) {
                    Some(&next) => id = next,
                    None => break,
                }
            }
            id
        }

        /// The struct named `name` with members (the first such id: the
        /// definition, not a forward declaration).
        fn named(&self, name: &str) -> u32 {
            let mut ids: Vec<u32> = self
                .composites
                .iter()
                .filter(|(_, s)| s.name == name && !s.members.is_empty())
                .map(|(id, _)| *id)
                .collect();
            ids.sort_unstable();
            *ids.first()
                .unwrap_or_else(|| panic!("bpftool shows no struct {name}"))
        }

        /// Bit offset and type of member `name` of composite `id`, looking
        /// into anonymous members the way C (and `member_offset`) does.
        fn member(&self, id: u32, name: &str) -> Option<(u64, u32)> {
            for (m, ty, bits, _) in &self.composites.get(&id)?.members {
                if m == name {
                    return Some((*bits, *ty));
                }
                if m == "(anon)"
                    && let Some((inner, ty)) = self.member(self.strip(*ty), name)
                {
                    return Some((bits + inner, ty));
                }
            }
            None
        }

        /// Bit offset of the dotted `path` in struct `name`.
        fn path_bits(&self, name: &str, path: &str) -> Option<u64> {
            let (mut id, mut bits) = (self.named(name), 0);
            for part in path.split('.') {
                let (b, ty) = self.member(id, part)?;
                bits += b;
                id = self.strip(ty);
            }
            Some(bits)
        }
    }

    fn parse_bpftool_raw(text: &str) -> Raw {
        fn field<T: std::str::FromStr>(line: &str, key: &str) -> Option<T> {
            let rest = &line[line.find(key)? + key.len()..];
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        }
        let mut composites = HashMap::new();
        let mut aliases = HashMap::new();
        let mut current: Option<u32> = None;
        for line in text.lines() {
            if let Some(member) = line.strip_prefix('\t') {
                let (Some(id), Some(name)) = (current, member.split('\'').nth(1)) else {
                    continue;
                };
                if let (Some(s), Some(ty), Some(bits)) = (
                    composites.get_mut(&id),
                    field(member, "type_id="),
                    field(member, "bits_offset="),
                ) {
                    let s: &mut RawStruct = s;
                    let bf = field(member, "bitfield_size=").unwrap_or(0);
                    s.members.push((name.to_owned(), ty, bits, bf));
                }
                continue;
            }
            current = None;
            let is_alias = ["TYPEDEF", "CONST", "VOLATILE", "RESTRICT", "TYPE_TAG"]
                .iter()
                .any(|k| line.contains(&format!("] {k} '")));
            if let (true, Some(id), Some(ty)) =
                (is_alias, field(line, "["), field(line, "type_id="))
            {
                aliases.insert(id, ty);
                continue;
            }
            let is_composite = line.contains("] STRUCT '") || line.contains("] UNION '");
            if let (true, Some(id), Some(size)) =
                (is_composite, field(line, "["), field(line, "size="))
            {
                let name = line.split('\'').nth(1).unwrap_or_default().to_owned();
                composites.insert(
                    id,
                    RawStruct {
                        name,
                        size,
                        members: Vec::new(),
                    },
                );
                current = Some(id);
            }
        }
        Raw {
            composites,
            aliases,
        }
    }

    /// Flattens anonymous members the way C (and `member_offset`) does.
    fn flatten(raw: &Raw, id: u32, base: u64, out: &mut Vec<(String, u64, u32)>) {
        for (name, ty, bits, bf) in &raw.composites[&id].members {
            if name == "(anon)" {
                if raw.composites.contains_key(ty) {
                    flatten(raw, *ty, base + bits, out);
                }
            } else {
                out.push((name.clone(), base + bits, *bf));
            }
        }
    }

    /// Cross-checks our parser against bpftool's independent decoding of the
    /// same BTF: every member path the loader reads, and every named
    /// (flattened) member of the structs it reads them from. bpftool is a
    /// test tool `cargo xtask test` installs; without it this fails, never skips.
    #[test]
    fn running_kernel_matches_bpftool() {
        let btf = load_vmlinux();
        let fields = fields_the_loader_reads(&btf);
        let output = match std::process::Command::new("bpftool")
            .args(["btf", "dump", "file", VMLINUX, "format", "raw"])
            .output()
        {
            Ok(o) if o.status.success() => o,
            other => panic!(
                "bpftool is needed for this cross-check (`cargo xtask test` installs it): {other:?}"
            ),
        };
        let raw = parse_bpftool_raw(&String::from_utf8_lossy(&output.stdout));
        for &(name, path) in &fields {
            let bits = raw
                .path_bits(name, path)
                .unwrap_or_else(|| panic!("bpftool shows no {name}.{path}"));
            assert_eq!(
                u64::from(btf.member_offset(name, path).unwrap()) * 8,
                bits,
                "{name}.{path}"
            );
        }
        let mut structs: Vec<&str> = fields.iter().map(|(s, _)| *s).collect();
        structs.sort_unstable();
        structs.dedup();
        let mut checked = 0;
        for name in structs {
            let id = raw.named(name);
            assert_eq!(
                btf.struct_size(name).unwrap(),
                raw.composites[&id].size,
                "size of {name}"
            );
            let mut members = Vec::new();
            flatten(&raw, id, 0, &mut members);
            for (field, bits, bitfield) in members {
                match btf.member_offset(name, &field) {
                    Ok(off) => {
                        assert_eq!(bitfield, 0, "{name}.{field} is a bitfield per bpftool");
                        assert_eq!(u64::from(off) * 8, bits, "{name}.{field}");
                        checked += 1;
                    }
                    Err(e) => assert!(
                        bitfield != 0 || !bits.is_multiple_of(8),
                        "{name}.{field}: {e:#}"
                    ),
                }
            }
        }
        eprintln!(
            "cross-checked the loader's {} member paths and {checked} member offsets against bpftool",
            fields.len()
        );
        assert!(checked > 100);
    }
}
