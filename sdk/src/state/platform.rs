//! Where an image can run: architecture, kernel (vDSO layout) and CPU features.

use serde::{Deserialize, Serialize};

use crate::image::Digest;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// `uname -m`, e.g. "x86_64".
    pub arch: String,
    /// `uname -r` of the kernel the image was taken on (informational; the vDSO decides).
    pub kernel_release: String,
    pub vdso: VdsoLayout,
    pub cpu: CpuFeatures,
}

/// The kernel's special mappings ([vvar], [vvar_vclock], [vdso], …) in address order. The restored
/// process holds pointers into them, so the restoring kernel must provide the same layout and the
/// same vDSO code.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VdsoLayout {
    pub regions: Vec<SpecialRegion>,
    /// SHA-256 of the [vdso] text.
    pub vdso_digest: Digest,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecialRegion {
    /// The name as /proc/<pid>/maps shows it, e.g. "[vdso]".
    pub name: String,
    pub start: u64,
    pub end: u64,
}

/// The CPU features the process may have started to use.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuFeatures {
    pub vendor: String,
    pub model_name: String,
    /// XCR0: the state components enabled for xsave (x87, SSE, AVX, AVX-512, AMX, …).
    pub xsave_mask: u64,
    /// Size of the signal frame's xsave area the kernel uses.
    pub xsave_size: u32,
    /// CPUID feature words: leaf 1 ECX/EDX, leaf 7.0 EBX/ECX/EDX, leaf 0x80000001 ECX/EDX.
    pub cpuid: Vec<u32>,
}

const SPECIAL: [&str; 3] = ["[vvar]", "[vvar_vclock]", "[vdso]"];

/// Names of CPUID feature bits worth naming in messages: (word index, bit, name).
const NAMED_FEATURES: &[(usize, u32, &str)] = &[
    (0, 0, "sse3"),
    (0, 9, "ssse3"),
    (0, 19, "sse4.1"),
    (0, 20, "sse4.2"),
    (0, 23, "popcnt"),
    (0, 25, "aes"),
    (0, 28, "avx"),
    (0, 29, "f16c"),
    (0, 12, "fma"),
    (2, 5, "avx2"),
    (2, 3, "bmi1"),
    (2, 8, "bmi2"),
    (2, 16, "avx512f"),
    (2, 17, "avx512dq"),
    (2, 29, "sha"),
    (2, 30, "avx512bw"),
    (2, 31, "avx512vl"),
    (3, 1, "avx512vbmi"),
    (4, 22, "amx-bf16"),
    (4, 24, "amx-tile"),
];

impl Platform {
    /// The platform this process runs on.
    pub fn current() -> std::io::Result<Platform> {
        let kernel_release = std::fs::read_to_string("/proc/sys/kernel/osrelease")?
            .trim()
            .to_owned();
        let maps = crate::procfs::maps(std::process::id() as i32)?;
        let mut vdso = VdsoLayout::default();
        for m in maps.iter().filter(|m| SPECIAL.contains(&m.name.as_str())) {
            vdso.regions.push(SpecialRegion {
                name: m.name.clone(),
                start: m.start,
                end: m.end,
            });
            if m.name == "[vdso]" {
                let text = crate::sys::read_own_vdso(m.start, (m.end - m.start) as usize);
                vdso.vdso_digest = crate::image::Digest(sha256(&text));
            }
        }
        Ok(Platform {
            arch: std::env::consts::ARCH.to_owned(),
            kernel_release,
            vdso,
            cpu: CpuFeatures::current(),
        })
    }

    /// Why an image taken on `self` cannot run on `here`, one reason per difference.
    pub fn incompatibilities(&self, here: &Platform) -> Vec<String> {
        let mut why = Vec::new();
        if self.arch != here.arch {
            why.push(format!(
                "image is for {}, this machine is {}",
                self.arch, here.arch
            ));
        }
        let shape = |l: &VdsoLayout| -> Vec<(String, u64, u64)> {
            let base = l.regions.first().map_or(0, |r| r.start);
            l.regions
                .iter()
                .map(|r| (r.name.clone(), r.start.wrapping_sub(base), r.end - r.start))
                .collect()
        };
        if shape(&self.vdso) != shape(&here.vdso) {
            let show = |l: &VdsoLayout| {
                l.regions
                    .iter()
                    .map(|r| format!("{} {} KiB", r.name, (r.end - r.start) / 1024))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            why.push(format!(
                "kernel vDSO layout differs: image has [{}] (kernel {}), this kernel has [{}] (kernel {})",
                show(&self.vdso),
                self.kernel_release,
                show(&here.vdso),
                here.kernel_release
            ));
        } else if self.vdso.vdso_digest != here.vdso.vdso_digest {
            why.push(format!(
                "kernel vDSO code differs: image was taken on kernel {}, this is kernel {}",
                self.kernel_release, here.kernel_release
            ));
        }
        let missing_xsave = self.cpu.xsave_mask & !here.cpu.xsave_mask;
        if missing_xsave != 0 {
            why.push(format!(
                "CPU lacks xsave state components {missing_xsave:#x} the image may use (image XCR0 {:#x}, this CPU {:#x})",
                self.cpu.xsave_mask, here.cpu.xsave_mask
            ));
        }
        let mut missing = Vec::new();
        for (i, (&img, &cur)) in self.cpu.cpuid.iter().zip(&here.cpu.cpuid).enumerate() {
            let lacking = img & !cur;
            for bit in 0..32 {
                if lacking & (1 << bit) != 0 {
                    let name = NAMED_FEATURES
                        .iter()
                        .find(|(w, b, _)| *w == i && *b == bit)
                        .map_or_else(|| format!("cpuid word {i} bit {bit}"), |f| f.2.to_owned());
                    missing.push(name);
                }
            }
        }
        if self.cpu.cpuid.len() > here.cpu.cpuid.len() {
            missing.push("feature words this thaw does not know".into());
        }
        if !missing.is_empty() {
            why.push(format!(
                "CPU lacks features the image may use: {} (image CPU: {}, this CPU: {})",
                missing.join(", "),
                self.cpu.model_name,
                here.cpu.model_name
            ));
        }
        why
    }
}

impl CpuFeatures {
    /// Features of the CPU this process runs on.
    pub fn current() -> CpuFeatures {
        use crate::sys::cpuid;
        let (_, b, c, d) = cpuid(0, 0);
        let vendor: Vec<u8> = [b, d, c].iter().flat_map(|w| w.to_le_bytes()).collect();
        let (_, _, c1, d1) = cpuid(1, 0);
        let (_, b7, c7, d7) = cpuid(7, 0);
        let (_, _, ce, de) = cpuid(0x8000_0001, 0);
        let xsave_mask = crate::sys::xcr0();
        let xsave_size = if xsave_mask != 0 {
            cpuid(0xd, 0).1
        } else {
            512
        };
        // The first processor's lines are enough: the kernel makes each processor's part as it
        // is read (its frequency asks the CPU), so reading the whole file costs milliseconds.
        let model_name = first_bytes("/proc/cpuinfo", 4096)
            .and_then(|t| {
                t.lines().find_map(|l| {
                    l.strip_prefix("model name")
                        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
                })
            })
            .unwrap_or_default();
        CpuFeatures {
            vendor: String::from_utf8_lossy(&vendor).into_owned(),
            model_name,
            xsave_mask,
            xsave_size,
            // Leaf 1 EDX bits 24..=27 (fxsr, sse, sse2, htt) are the same everywhere; the hypervisor
            // bit (ECX 31) and OSXSAVE (ECX 27) say nothing about what code may execute.
            cpuid: vec![c1 & !(1 << 31), d1 & !(1 << 28), b7, c7, d7, ce, de],
        }
    }
}

/// Up to `n` bytes from the start of `path`, as text.
fn first_bytes(path: &str, n: usize) -> Option<String> {
    use std::io::Read;
    let mut buf = Vec::with_capacity(n);
    std::fs::File::open(path)
        .ok()?
        .take(n as u64)
        .read_to_end(&mut buf)
        .ok()?;
    Some(String::from_utf8_lossy(&buf).into_owned())
}

fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(data).into()
}
