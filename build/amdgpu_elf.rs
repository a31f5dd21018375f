//! Just enough ELF and MessagePack to read an AMDGPU code object (HSACO): its dynamic symbols
//! and the per-kernel resource metadata in the `NT_AMDGPU_METADATA` note.
//!
//! Shared, through `#[path]`, by the build script (which fails the build on scratch or spills),
//! the runtime (which reads the wavefront size of each kernel) and the tests. No dependencies,
//! no `unsafe`; every read is bounds-checked and malformed input is an `Err`, never a panic.

#![allow(dead_code)]

/// `e_machine` of AMDGPU code objects.
pub const EM_AMDGPU: u16 = 224;
/// Note type of the MessagePack metadata (code object v3 and later), owner "AMDGPU".
pub const NT_AMDGPU_METADATA: u32 = 32;

/// The resources one kernel uses, from its `amdhsa.kernels` metadata entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelMeta {
    pub name: String,
    pub vgpr_count: u64,
    pub sgpr_count: u64,
    pub agpr_count: u64,
    pub vgpr_spill_count: u64,
    pub sgpr_spill_count: u64,
    /// Scratch (private segment) bytes per work-item; must be 0.
    pub private_segment_fixed_size: u64,
    /// Static LDS bytes per work-group.
    pub group_segment_fixed_size: u64,
    pub kernarg_segment_size: u64,
    pub max_flat_workgroup_size: u64,
    pub wavefront_size: u64,
    pub uses_dynamic_stack: bool,
    /// `(offset, size, value_kind)` of each argument the caller passes (the `hidden_*`
    /// arguments the runtime fills in are left out).
    pub explicit_args: Vec<(u64, u64, String)>,
}

impl KernelMeta {
    /// Why this kernel is unacceptable (scratch, spills, a dynamic stack), or `None`.
    pub fn problem(&self) -> Option<String> {
        let mut why = Vec::new();
        if self.private_segment_fixed_size > 0 {
            why.push(format!(
                "{} bytes of scratch per lane",
                self.private_segment_fixed_size
            ));
        }
        if self.vgpr_spill_count > 0 {
            why.push(format!("{} VGPR spills", self.vgpr_spill_count));
        }
        if self.sgpr_spill_count > 0 {
            why.push(format!("{} SGPR spills", self.sgpr_spill_count));
        }
        if self.uses_dynamic_stack {
            why.push("a dynamic stack".to_string());
        }
        if why.is_empty() {
            None
        } else {
            Some(why.join(", "))
        }
    }
}

/// What a code object says about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CodeObjectMeta {
    /// `amdhsa.target`, e.g. `amdgcn-amd-amdhsa--gfx942`.
    pub target: String,
    pub kernels: Vec<KernelMeta>,
}

struct Section {
    kind: u32,
    offset: usize,
    size: usize,
    link: u32,
    entsize: usize,
    name_off: u32,
}

fn u16_at(b: &[u8], o: usize) -> Result<u16, String> {
    b.get(o..o + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or_else(|| format!("ELF truncated at byte {o}"))
}

fn u32_at(b: &[u8], o: usize) -> Result<u32, String> {
    b.get(o..o + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| format!("ELF truncated at byte {o}"))
}

fn u64_at(b: &[u8], o: usize) -> Result<u64, String> {
    b.get(o..o + 8)
        .map(|s| {
            let mut a = [0u8; 8];
            a.copy_from_slice(s);
            u64::from_le_bytes(a)
        })
        .ok_or_else(|| format!("ELF truncated at byte {o}"))
}

fn usize_of(v: u64) -> Result<usize, String> {
    usize::try_from(v).map_err(|_| format!("ELF value {v} out of range"))
}

fn sections(elf: &[u8]) -> Result<Vec<Section>, String> {
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" {
        return Err("not an ELF file".into());
    }
    if elf[4] != 2 || elf[5] != 1 {
        return Err("not a little-endian ELF64 file".into());
    }
    let machine = u16_at(elf, 18)?;
    if machine != EM_AMDGPU {
        return Err(format!(
            "ELF machine is {machine}, not AMDGPU ({EM_AMDGPU})"
        ));
    }
    let shoff = usize_of(u64_at(elf, 40)?)?;
    let shentsize = usize::from(u16_at(elf, 58)?);
    let shnum = usize::from(u16_at(elf, 60)?);
    if shentsize < 64 {
        return Err(format!("ELF section header size {shentsize} < 64"));
    }
    let mut out = Vec::with_capacity(shnum);
    for i in 0..shnum {
        let h = shoff + i * shentsize;
        let s = Section {
            name_off: u32_at(elf, h)?,
            kind: u32_at(elf, h + 4)?,
            offset: usize_of(u64_at(elf, h + 24)?)?,
            size: usize_of(u64_at(elf, h + 32)?)?,
            link: u32_at(elf, h + 40)?,
            entsize: usize_of(u64_at(elf, h + 56)?)?,
        };
        // SHT_NOBITS (8) occupies no file bytes.
        if s.kind != 8 && s.offset.checked_add(s.size).is_none_or(|e| e > elf.len()) {
            return Err(format!("ELF section {i} lies outside the file"));
        }
        out.push(s);
    }
    Ok(out)
}

fn cstr(bytes: &[u8], off: usize) -> Result<String, String> {
    let tail = bytes
        .get(off..)
        .ok_or_else(|| format!("ELF string offset {off} out of range"))?;
    let end = tail
        .iter()
        .position(|&c| c == 0)
        .ok_or("ELF string not terminated")?;
    String::from_utf8(tail[..end].to_vec()).map_err(|_| "ELF string not UTF-8".to_string())
}

/// Names of the defined global symbols in `.dynsym` (what the HIP loader can find): for every
/// kernel `k` both `k` (the code) and `k.kd` (its kernel descriptor).
pub fn dynamic_symbols(elf: &[u8]) -> Result<Vec<String>, String> {
    let secs = sections(elf)?;
    let dynsym = secs
        .iter()
        .find(|s| s.kind == 11) // SHT_DYNSYM
        .ok_or("code object has no .dynsym")?;
    let strtab = secs
        .get(dynsym.link as usize)
        .ok_or("bad .dynsym string table link")?;
    let strs = &elf[strtab.offset..strtab.offset + strtab.size];
    let ent = if dynsym.entsize == 0 {
        24
    } else {
        dynsym.entsize
    };
    let mut names = Vec::new();
    for i in 1..dynsym.size / ent {
        let e = dynsym.offset + i * ent;
        let name = u32_at(elf, e)? as usize;
        let info = elf[e + 4];
        let shndx = u16_at(elf, e + 6)?;
        let bind = info >> 4;
        if shndx != 0 && (bind == 1 || bind == 2) {
            names.push(cstr(strs, name)?);
        }
    }
    Ok(names)
}

/// The raw descriptor of the `AMDGPU` note of type [`NT_AMDGPU_METADATA`].
fn metadata_note(elf: &[u8]) -> Result<&[u8], String> {
    for s in sections(elf)?.iter().filter(|s| s.kind == 7) {
        // SHT_NOTE: entries of namesz, descsz, type, name (4-aligned), desc (4-aligned).
        let mut p = s.offset;
        let end = s.offset + s.size;
        while p + 12 <= end {
            let namesz = u32_at(elf, p)? as usize;
            let descsz = u32_at(elf, p + 4)? as usize;
            let kind = u32_at(elf, p + 8)?;
            let name_at = p + 12;
            let desc_at = name_at + namesz.div_ceil(4) * 4;
            let next = desc_at + descsz.div_ceil(4) * 4;
            if desc_at + descsz > end {
                return Err("ELF note runs past its section".into());
            }
            let name = &elf[name_at..name_at + namesz];
            if kind == NT_AMDGPU_METADATA && name.strip_suffix(b"\0").unwrap_or(name) == b"AMDGPU" {
                return Ok(&elf[desc_at..desc_at + descsz]);
            }
            p = next;
        }
    }
    Err("code object has no NT_AMDGPU_METADATA note".into())
}

/// A decoded MessagePack value (only what AMDGPU metadata uses).
#[derive(Debug, Clone, PartialEq)]
pub enum Msg {
    Nil,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Bin(Vec<u8>),
    Array(Vec<Msg>),
    Map(Vec<(Msg, Msg)>),
}

impl Msg {
    pub fn get(&self, key: &str) -> Option<&Msg> {
        match self {
            Msg::Map(kv) => kv
                .iter()
                .find(|(k, _)| matches!(k, Msg::Str(s) if s == key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    fn uint(&self) -> Option<u64> {
        match self {
            Msg::Int(i) => u64::try_from(*i).ok(),
            _ => None,
        }
    }

    fn str(&self) -> Option<&str> {
        match self {
            Msg::Str(s) => Some(s),
            _ => None,
        }
    }
}

struct Reader<'a> {
    b: &'a [u8],
    p: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let s = self
            .p
            .checked_add(n)
            .and_then(|e| self.b.get(self.p..e))
            .ok_or_else(|| format!("msgpack truncated at byte {}", self.p))?;
        self.p += n;
        Ok(s)
    }

    fn be(&mut self, n: usize) -> Result<u64, String> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |acc, &c| (acc << 8) | u64::from(c)))
    }

    fn len(&mut self, n: usize) -> Result<usize, String> {
        let v = self.be(n)?;
        let v = usize_of(v)?;
        if v > self.b.len() {
            return Err(format!("msgpack length {v} exceeds the note"));
        }
        Ok(v)
    }

    fn string(&mut self, n: usize) -> Result<Msg, String> {
        let s = self.take(n)?;
        String::from_utf8(s.to_vec())
            .map(Msg::Str)
            .map_err(|_| "msgpack string not UTF-8".to_string())
    }

    fn array(&mut self, n: usize, depth: u32) -> Result<Msg, String> {
        let mut v = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            v.push(self.value(depth + 1)?);
        }
        Ok(Msg::Array(v))
    }

    fn map(&mut self, n: usize, depth: u32) -> Result<Msg, String> {
        let mut v = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            let k = self.value(depth + 1)?;
            let x = self.value(depth + 1)?;
            v.push((k, x));
        }
        Ok(Msg::Map(v))
    }

    fn value(&mut self, depth: u32) -> Result<Msg, String> {
        if depth > 64 {
            return Err("msgpack nested too deeply".into());
        }
        let t = self.take(1)?[0];
        Ok(match t {
            0x00..=0x7f => Msg::Int(i128::from(t)),
            0x80..=0x8f => return self.map(usize::from(t & 0x0f), depth),
            0x90..=0x9f => return self.array(usize::from(t & 0x0f), depth),
            0xa0..=0xbf => return self.string(usize::from(t & 0x1f)),
            0xc0 => Msg::Nil,
            0xc2 => Msg::Bool(false),
            0xc3 => Msg::Bool(true),
            0xc4..=0xc6 => {
                let n = self.len(1 << (t - 0xc4))?;
                Msg::Bin(self.take(n)?.to_vec())
            }
            0xca => Msg::Float(f64::from(f32::from_bits(self.be(4)? as u32))),
            0xcb => Msg::Float(f64::from_bits(self.be(8)?)),
            0xcc..=0xcf => Msg::Int(i128::from(self.be(1 << (t - 0xcc))?)),
            0xd0 => Msg::Int(i128::from(self.be(1)? as u8 as i8)),
            0xd1 => Msg::Int(i128::from(self.be(2)? as u16 as i16)),
            0xd2 => Msg::Int(i128::from(self.be(4)? as u32 as i32)),
            0xd3 => Msg::Int(i128::from(self.be(8)? as i64)),
            0xd9..=0xdb => {
                let n = self.len(1 << (t - 0xd9))?;
                return self.string(n);
            }
            0xdc | 0xdd => {
                let n = self.len(if t == 0xdc { 2 } else { 4 })?;
                return self.array(n, depth);
            }
            0xde | 0xdf => {
                let n = self.len(if t == 0xde { 2 } else { 4 })?;
                return self.map(n, depth);
            }
            0xe0..=0xff => Msg::Int(i128::from(t as i8)),
            other => return Err(format!("msgpack type byte {other:#x} not supported")),
        })
    }
}

/// Decodes one MessagePack value that must span all of `bytes`.
pub fn decode_msgpack(bytes: &[u8]) -> Result<Msg, String> {
    let mut r = Reader { b: bytes, p: 0 };
    let v = r.value(0)?;
    if r.p != bytes.len() {
        return Err(format!(
            "msgpack: {} trailing bytes after the value",
            bytes.len() - r.p
        ));
    }
    Ok(v)
}

/// The target and per-kernel resources of a code object.
pub fn code_object_meta(elf: &[u8]) -> Result<CodeObjectMeta, String> {
    let note = decode_msgpack(metadata_note(elf)?)?;
    let target = note
        .get("amdhsa.target")
        .and_then(Msg::str)
        .ok_or("metadata has no amdhsa.target")?
        .to_string();
    let list = match note.get("amdhsa.kernels") {
        Some(Msg::Array(v)) => v,
        _ => return Err("metadata has no amdhsa.kernels array".into()),
    };
    let mut kernels = Vec::with_capacity(list.len());
    for k in list {
        let name = k
            .get(".name")
            .and_then(Msg::str)
            .ok_or("kernel metadata without .name")?
            .to_string();
        let req = |key: &str| -> Result<u64, String> {
            k.get(key)
                .and_then(Msg::uint)
                .ok_or_else(|| format!("kernel {name}: metadata has no {key}"))
        };
        let opt = |key: &str| k.get(key).and_then(Msg::uint).unwrap_or(0);
        let mut explicit_args = Vec::new();
        if let Some(Msg::Array(args)) = k.get(".args") {
            for a in args {
                let kind = a.get(".value_kind").and_then(Msg::str).unwrap_or("");
                if !kind.starts_with("hidden_") {
                    explicit_args.push((
                        a.get(".offset").and_then(Msg::uint).unwrap_or(u64::MAX),
                        a.get(".size").and_then(Msg::uint).unwrap_or(0),
                        kind.to_string(),
                    ));
                }
            }
        }
        kernels.push(KernelMeta {
            explicit_args,
            vgpr_count: req(".vgpr_count")?,
            sgpr_count: req(".sgpr_count")?,
            agpr_count: opt(".agpr_count"),
            vgpr_spill_count: req(".vgpr_spill_count")?,
            sgpr_spill_count: req(".sgpr_spill_count")?,
            private_segment_fixed_size: req(".private_segment_fixed_size")?,
            group_segment_fixed_size: req(".group_segment_fixed_size")?,
            kernarg_segment_size: req(".kernarg_segment_size")?,
            max_flat_workgroup_size: req(".max_flat_workgroup_size")?,
            wavefront_size: req(".wavefront_size")?,
            uses_dynamic_stack: matches!(k.get(".uses_dynamic_stack"), Some(Msg::Bool(true))),
            name,
        });
    }
    kernels.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(CodeObjectMeta { target, kernels })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msgpack_values() {
        // {"a": [1, -1, 300, true, "xy"], "b": 2.5f64}
        let mut b = vec![
            0x82, 0xa1, b'a', 0x95, 0x01, 0xff, 0xcd, 0x01, 0x2c, 0xc3, 0xa2,
        ];
        b.extend_from_slice(b"xy");
        b.extend_from_slice(&[0xa1, b'b', 0xcb]);
        b.extend_from_slice(&2.5f64.to_bits().to_be_bytes());
        let v = decode_msgpack(&b).unwrap();
        assert_eq!(
            v.get("a"),
            Some(&Msg::Array(vec![
                Msg::Int(1),
                Msg::Int(-1),
                Msg::Int(300),
                Msg::Bool(true),
                Msg::Str("xy".into())
            ]))
        );
        assert_eq!(v.get("b"), Some(&Msg::Float(2.5)));
        assert!(decode_msgpack(&b[..b.len() - 1]).is_err());
        assert!(decode_msgpack(&[0xdf, 0xff, 0xff, 0xff, 0xff]).is_err());
    }

    #[test]
    fn rejects_non_elf() {
        assert!(code_object_meta(b"not an elf at all").is_err());
        assert!(dynamic_symbols(&[0u8; 80]).is_err());
    }

    #[test]
    fn problems() {
        let ok = KernelMeta::default();
        assert_eq!(ok.problem(), None);
        let bad = KernelMeta {
            private_segment_fixed_size: 16,
            vgpr_spill_count: 2,
            ..KernelMeta::default()
        };
        let p = bad.problem().unwrap();
        assert!(
            p.contains("16 bytes of scratch") && p.contains("2 VGPR spills"),
            "{p}"
        );
    }
}
