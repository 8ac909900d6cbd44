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
fn functions_are_found_by_name_and_kind() {
    let mut w = Writer::new();
    let int = w.int("int", 4);
    // A type of the function's name that is not a function is not it.
    w.wrap(KIND_TYPEDEF, "bpf_lsm_bprm_check_security", int);
    let f = w.wrap(KIND_FUNC, "bpf_lsm_bprm_check_security", int);
    let btf = Btf::from_bytes(&w.bytes(false)).unwrap();
    assert_eq!(btf.func_id("bpf_lsm_bprm_check_security"), Some(f));
    assert_eq!(btf.func_id("bpf_lsm_file_open"), None);
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
        if let (true, Some(id), Some(ty)) = (is_alias, field(line, "["), field(line, "type_id=")) {
            aliases.insert(id, ty);
            continue;
        }
        let is_composite = line.contains("] STRUCT '") || line.contains("] UNION '");
        if let (true, Some(id), Some(size)) = (is_composite, field(line, "["), field(line, "size="))
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
