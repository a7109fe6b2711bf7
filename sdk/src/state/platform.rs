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
