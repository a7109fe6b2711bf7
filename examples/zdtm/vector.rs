//! Vector registers of a thread interrupted by the checkpoint: a thread holds known values in
//! every vector register (zmm0-31 and the opmask registers k1-7 with AVX-512, else ymm0-15) and
//! spins without touching them; after restore it stores them and they must be what it loaded.
//!
//! `zdtm-vector amx`: the process first asks for the AMX tile state (`arch_prctl
//! ARCH_REQ_XCOMP_PERM`, as oneDNN does before its first AMX kernel) and the thread also holds a
//! tile (`tmm0`) across the checkpoint. The permission widens every thread's saved register state,
//! so the restored process must have it again before its threads resume, or the kernel restores
//! only their legacy SSE state (and the next AMX instruction is fatal). `zdtm-vector
//! amx-permission`: the permission only, no tile held (the case that would go unnoticed).
//! `zdtm-vector amx-blocked`: as `amx`, the thread blocking every signal (captured by ptrace).

#[path = "common.rs"]
mod common;

use std::arch::asm;
use std::sync::atomic::{AtomicU8, Ordering};

const ARCH_GET_XCOMP_PERM: u64 = 0x1022;
const ARCH_REQ_XCOMP_PERM: u64 = 0x1023;
const XFEATURE_XTILEDATA: u64 = 18;

static READY: AtomicU8 = AtomicU8::new(0);
static STOP: AtomicU8 = AtomicU8::new(0);

/// 32 registers of 64 bytes, then 8 opmask words (k0 unused).
#[repr(C, align(64))]
struct Regs {
    v: [u8; 32 * 64],
    k: [u64; 8],
}

impl Regs {
    fn pattern() -> Box<Regs> {
        let mut r = Box::new(Regs {
            v: [0; 32 * 64],
            k: [0; 8],
        });
        for (i, b) in r.v.iter_mut().enumerate() {
            *b = (i * 7 + i / 64 * 13 + 1) as u8;
        }
        for (i, k) in r.k.iter_mut().enumerate().skip(1) {
            *k = 0x0101_0101_0101_0101u64.wrapping_mul(i as u64 + 1) ^ 0xa5a5;
        }
        r
    }

    fn empty() -> Box<Regs> {
        Box::new(Regs {
            v: [0; 32 * 64],
            k: [0; 8],
        })
    }
}

/// Tile configuration (palette 1): tmm0 with 16 rows of 64 bytes.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

fn tile_config() -> TileConfig {
    let mut c = [0u8; 64];
    c[0] = 1;
    c[16..18].copy_from_slice(&64u16.to_le_bytes());
    c[48] = 16;
    TileConfig(c)
}

#[repr(C, align(64))]
struct Tile([u8; 1024]);

#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn hold_zmm(from: &Regs, to: &mut Regs) {
    // SAFETY: reads and writes 32 x 64 bytes and 8 x 8 bytes of the two buffers; the flags are
    // statics; every register written is declared.
    unsafe {
        asm!(
            "vmovdqu64 zmm0, [rax + 0]",
            "vmovdqu64 zmm1, [rax + 64]",
            "vmovdqu64 zmm2, [rax + 128]",
            "vmovdqu64 zmm3, [rax + 192]",
            "vmovdqu64 zmm4, [rax + 256]",
            "vmovdqu64 zmm5, [rax + 320]",
            "vmovdqu64 zmm6, [rax + 384]",
            "vmovdqu64 zmm7, [rax + 448]",
            "vmovdqu64 zmm8, [rax + 512]",
            "vmovdqu64 zmm9, [rax + 576]",
            "vmovdqu64 zmm10, [rax + 640]",
            "vmovdqu64 zmm11, [rax + 704]",
            "vmovdqu64 zmm12, [rax + 768]",
            "vmovdqu64 zmm13, [rax + 832]",
            "vmovdqu64 zmm14, [rax + 896]",
            "vmovdqu64 zmm15, [rax + 960]",
            "vmovdqu64 zmm16, [rax + 1024]",
            "vmovdqu64 zmm17, [rax + 1088]",
            "vmovdqu64 zmm18, [rax + 1152]",
            "vmovdqu64 zmm19, [rax + 1216]",
            "vmovdqu64 zmm20, [rax + 1280]",
            "vmovdqu64 zmm21, [rax + 1344]",
            "vmovdqu64 zmm22, [rax + 1408]",
            "vmovdqu64 zmm23, [rax + 1472]",
            "vmovdqu64 zmm24, [rax + 1536]",
            "vmovdqu64 zmm25, [rax + 1600]",
            "vmovdqu64 zmm26, [rax + 1664]",
            "vmovdqu64 zmm27, [rax + 1728]",
            "vmovdqu64 zmm28, [rax + 1792]",
            "vmovdqu64 zmm29, [rax + 1856]",
            "vmovdqu64 zmm30, [rax + 1920]",
            "vmovdqu64 zmm31, [rax + 1984]",
            "kmovq k1, [rcx + 8]",
            "kmovq k2, [rcx + 16]",
            "kmovq k3, [rcx + 24]",
            "kmovq k4, [rcx + 32]",
            "kmovq k5, [rcx + 40]",
            "kmovq k6, [rcx + 48]",
            "kmovq k7, [rcx + 56]",
            "mov byte ptr [rdi], 1",
            "2:",
            "pause",
            "cmp byte ptr [r8], 0",
            "je 2b",
            "vmovdqu64 [rdx + 0], zmm0",
            "vmovdqu64 [rdx + 64], zmm1",
            "vmovdqu64 [rdx + 128], zmm2",
            "vmovdqu64 [rdx + 192], zmm3",
            "vmovdqu64 [rdx + 256], zmm4",
            "vmovdqu64 [rdx + 320], zmm5",
            "vmovdqu64 [rdx + 384], zmm6",
            "vmovdqu64 [rdx + 448], zmm7",
            "vmovdqu64 [rdx + 512], zmm8",
            "vmovdqu64 [rdx + 576], zmm9",
            "vmovdqu64 [rdx + 640], zmm10",
            "vmovdqu64 [rdx + 704], zmm11",
            "vmovdqu64 [rdx + 768], zmm12",
            "vmovdqu64 [rdx + 832], zmm13",
            "vmovdqu64 [rdx + 896], zmm14",
            "vmovdqu64 [rdx + 960], zmm15",
            "vmovdqu64 [rdx + 1024], zmm16",
            "vmovdqu64 [rdx + 1088], zmm17",
            "vmovdqu64 [rdx + 1152], zmm18",
            "vmovdqu64 [rdx + 1216], zmm19",
            "vmovdqu64 [rdx + 1280], zmm20",
            "vmovdqu64 [rdx + 1344], zmm21",
            "vmovdqu64 [rdx + 1408], zmm22",
            "vmovdqu64 [rdx + 1472], zmm23",
            "vmovdqu64 [rdx + 1536], zmm24",
            "vmovdqu64 [rdx + 1600], zmm25",
            "vmovdqu64 [rdx + 1664], zmm26",
            "vmovdqu64 [rdx + 1728], zmm27",
            "vmovdqu64 [rdx + 1792], zmm28",
            "vmovdqu64 [rdx + 1856], zmm29",
            "vmovdqu64 [rdx + 1920], zmm30",
            "vmovdqu64 [rdx + 1984], zmm31",
            "kmovq [rsi + 8], k1",
            "kmovq [rsi + 16], k2",
            "kmovq [rsi + 24], k3",
            "kmovq [rsi + 32], k4",
            "kmovq [rsi + 40], k5",
            "kmovq [rsi + 48], k6",
            "kmovq [rsi + 56], k7",
            in("rax") from.v.as_ptr(),
            in("rcx") from.k.as_ptr(),
            in("rdx") to.v.as_mut_ptr(),
            in("rsi") to.k.as_mut_ptr(),
            in("rdi") READY.as_ptr(),
            in("r8") STOP.as_ptr(),
            out("zmm0") _,
            out("zmm1") _,
            out("zmm2") _,
            out("zmm3") _,
            out("zmm4") _,
            out("zmm5") _,
            out("zmm6") _,
            out("zmm7") _,
            out("zmm8") _,
            out("zmm9") _,
            out("zmm10") _,
            out("zmm11") _,
            out("zmm12") _,
            out("zmm13") _,
            out("zmm14") _,
            out("zmm15") _,
            out("zmm16") _,
            out("zmm17") _,
            out("zmm18") _,
            out("zmm19") _,
            out("zmm20") _,
            out("zmm21") _,
            out("zmm22") _,
            out("zmm23") _,
            out("zmm24") _,
            out("zmm25") _,
            out("zmm26") _,
            out("zmm27") _,
            out("zmm28") _,
            out("zmm29") _,
            out("zmm30") _,
            out("zmm31") _,
            out("k1") _,
            out("k2") _,
            out("k3") _,
            out("k4") _,
            out("k5") _,
            out("k6") _,
            out("k7") _,
            options(nostack),
        );
    }
}

#[target_feature(enable = "avx2")]
unsafe fn hold_ymm(from: &Regs, to: &mut Regs) {
    // SAFETY: as above, 16 x 32 bytes at 64-byte strides.
    unsafe {
        asm!(
            "vmovdqu ymm0, [rax + 0]",
            "vmovdqu ymm1, [rax + 64]",
            "vmovdqu ymm2, [rax + 128]",
            "vmovdqu ymm3, [rax + 192]",
            "vmovdqu ymm4, [rax + 256]",
            "vmovdqu ymm5, [rax + 320]",
            "vmovdqu ymm6, [rax + 384]",
            "vmovdqu ymm7, [rax + 448]",
            "vmovdqu ymm8, [rax + 512]",
            "vmovdqu ymm9, [rax + 576]",
            "vmovdqu ymm10, [rax + 640]",
            "vmovdqu ymm11, [rax + 704]",
            "vmovdqu ymm12, [rax + 768]",
            "vmovdqu ymm13, [rax + 832]",
            "vmovdqu ymm14, [rax + 896]",
            "vmovdqu ymm15, [rax + 960]",
            "mov byte ptr [rdi], 1",
            "2:",
            "pause",
            "cmp byte ptr [r8], 0",
            "je 2b",
            "vmovdqu [rdx + 0], ymm0",
            "vmovdqu [rdx + 64], ymm1",
            "vmovdqu [rdx + 128], ymm2",
            "vmovdqu [rdx + 192], ymm3",
            "vmovdqu [rdx + 256], ymm4",
            "vmovdqu [rdx + 320], ymm5",
            "vmovdqu [rdx + 384], ymm6",
            "vmovdqu [rdx + 448], ymm7",
            "vmovdqu [rdx + 512], ymm8",
            "vmovdqu [rdx + 576], ymm9",
            "vmovdqu [rdx + 640], ymm10",
            "vmovdqu [rdx + 704], ymm11",
            "vmovdqu [rdx + 768], ymm12",
            "vmovdqu [rdx + 832], ymm13",
            "vmovdqu [rdx + 896], ymm14",
            "vmovdqu [rdx + 960], ymm15",
            in("rax") from.v.as_ptr(),
            in("rdx") to.v.as_mut_ptr(),
            in("rdi") READY.as_ptr(),
            in("r8") STOP.as_ptr(),
            out("ymm0") _,
            out("ymm1") _,
            out("ymm2") _,
            out("ymm3") _,
            out("ymm4") _,
            out("ymm5") _,
            out("ymm6") _,
            out("ymm7") _,
            out("ymm8") _,
            out("ymm9") _,
            out("ymm10") _,
            out("ymm11") _,
            out("ymm12") _,
            out("ymm13") _,
            out("ymm14") _,
            out("ymm15") _,
            options(nostack),
        );
    }
}

/// Loads tmm0 (AMX); the compiler never uses tile registers, so it stays loaded until
/// [`store_tile`].
unsafe fn load_tile(config: &TileConfig, tile: &Tile) {
    // SAFETY: a valid configuration and 16 rows of 64 bytes at a stride of 64.
    unsafe {
        asm!(
            "ldtilecfg [{c}]",
            "tileloadd tmm0, [{t} + {s}]",
            c = in(reg) config.0.as_ptr(),
            t = in(reg) tile.0.as_ptr(),
            s = in(reg) 64usize,
            options(nostack),
        );
    }
}

unsafe fn store_tile(tile: &mut Tile) {
    // SAFETY: 16 rows of 64 bytes at a stride of 64 into `tile`.
    unsafe {
        asm!(
            "tilestored [{t} + {s}], tmm0",
            "tilerelease",
            t = in(reg) tile.0.as_mut_ptr(),
            s = in(reg) 64usize,
            options(nostack),
        );
    }
}

fn xcomp_perm() -> u64 {
    let mut mask = 0u64;
    // SAFETY: the kernel writes 8 bytes to `mask`.
    unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_GET_XCOMP_PERM,
            &mut mask as *mut u64,
        )
    };
    mask
}

fn main() {
    let (_, _, extra) = common::argv();
    // `amx-permission`: the permission only, no tile held.
    let permission = extra.first().is_some_and(|a| a.starts_with("amx"));
    let amx = extra
        .first()
        .is_some_and(|a| a == "amx" || a == "amx-blocked");
    // `amx-blocked`: the thread blocks every signal, so the checkpoint captures it through
    // ptrace, and the checkpointing thread never used tiles (its frames have no room for them).
    let blocked = extra.first().is_some_and(|a| a == "amx-blocked");
    let wide = is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw");
    assert!(wide || is_x86_feature_detected!("avx2"), "no AVX2 here");
    if permission {
        // SAFETY: asks for a state component; no pointers.
        let r = unsafe {
            libc::syscall(
                libc::SYS_arch_prctl,
                ARCH_REQ_XCOMP_PERM,
                XFEATURE_XTILEDATA,
            )
        };
        assert_eq!(
            r,
            0,
            "ARCH_REQ_XCOMP_PERM: {}",
            std::io::Error::last_os_error()
        );
    }
    let perm_before = xcomp_perm();
    let holder = std::thread::spawn(move || {
        if blocked {
            // SAFETY: a full signal set of ours, applied to this thread.
            unsafe {
                let mut all: libc::sigset_t = std::mem::zeroed();
                libc::sigfillset(&mut all);
                libc::pthread_sigmask(libc::SIG_BLOCK, &all, std::ptr::null_mut());
            }
        }
        let (from, mut to) = (Regs::pattern(), Regs::empty());
        let mut tile_in = Tile([0; 1024]);
        for (i, b) in tile_in.0.iter_mut().enumerate() {
            *b = (i * 31 % 251) as u8;
        }
        let mut tile_out = Tile([0; 1024]);
        // SAFETY: the CPU has what each path uses (checked above; AMX was granted).
        unsafe {
            if amx {
                load_tile(&tile_config(), &tile_in);
            }
            if wide {
                hold_zmm(&from, &mut to);
            } else {
                hold_ymm(&from, &mut to);
            }
            if amx {
                store_tile(&mut tile_out);
            }
        }
        let n = if wide { 32 } else { 16 };
        let width = if wide { 64 } else { 32 };
        let bad: Vec<usize> = (0..n)
            .filter(|&i| from.v[i * 64..i * 64 + width] != to.v[i * 64..i * 64 + width])
            .collect();
        let k_ok = !wide || from.k[1..] == to.k[1..];
        (bad, k_ok, !amx || tile_in.0 == tile_out.0)
    });
    while READY.load(Ordering::Acquire) == 0 {
        std::hint::spin_loop();
    }
    let _restored = common::restored();
    STOP.store(1, Ordering::Release);
    let (bad, k_ok, tile_ok) = holder.join().unwrap();
    let mut c = common::Checks::default();
    c.check(
        "vector registers of a thread stopped between instructions",
        bad.is_empty() && k_ok,
        format!("registers changed: {bad:?}; opmask registers kept: {k_ok}"),
    );
    let perm = xcomp_perm();
    c.check(
        "extended state permission (arch_prctl ARCH_REQ_XCOMP_PERM)",
        perm == perm_before,
        format!("{perm:#x}, was {perm_before:#x}"),
    );
    if amx {
        c.check(
            "AMX tile register held across the checkpoint",
            tile_ok,
            "tmm0 changed",
        );
    }
    c.finish();
}
