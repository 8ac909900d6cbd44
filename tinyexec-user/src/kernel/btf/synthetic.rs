//! Raw BTF blobs built in code, for the tests and as the fuzzer's seeds: a
//! real kernel's BTF is not in the repository.
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
