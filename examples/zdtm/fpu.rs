//! FPU/SSE/AVX state across the checkpoint call: the callee-saved control state (MXCSR rounding
//! and flush-to-zero bits, the x87 control word) set before `save()` is in force after restore,
//! callee-saved general registers survive the call, and vector arithmetic gives the same results.

#[path = "common.rs"]
mod common;

use std::arch::asm;
use std::arch::x86_64::*;

fn mxcsr() -> u32 {
    let mut v = 0u32;
    // SAFETY: stmxcsr stores 4 bytes to a valid local.
    unsafe { asm!("stmxcsr [{}]", in(reg) &mut v, options(nostack)) };
    v
}

fn x87_cw() -> u16 {
    let mut v = 0u16;
    // SAFETY: fnstcw stores 2 bytes to a valid local.
    unsafe { asm!("fnstcw [{}]", in(reg) &mut v, options(nostack)) };
    v
}

extern "C" fn do_checkpoint() {
    let _ = common::checkpoint();
}

#[target_feature(enable = "avx2,fma")]
fn avx_work(seed: f64) -> [f64; 4] {
    let a = _mm256_set_pd(seed, seed * 2.0, seed * 3.0, seed * 4.0);
    let b = _mm256_set1_pd(1.000_000_1);
    let mut acc = a;
    for _ in 0..1000 {
        acc = _mm256_fmadd_pd(acc, b, a);
    }
    let mut out = [0f64; 4];
    // SAFETY: `out` holds four f64.
    unsafe { _mm256_storeu_pd(out.as_mut_ptr(), acc) };
    out
}

fn avx(seed: f64) -> [f64; 4] {
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA (checked above).
        unsafe { avx_work(seed) }
    } else {
        [seed; 4]
    }
}

fn main() {
    // Round toward zero, flush-to-zero, denormals-are-zero; x87 single precision, round up.
    let want_mxcsr = (mxcsr() & !0x6000) | 0x6000 | 0x8040;
    let want_cw: u16 = (x87_cw() & !0x0f00) | 0x0800;
    // SAFETY: loading valid control values.
    unsafe {
        asm!("ldmxcsr [{}]", in(reg) &want_mxcsr, options(nostack));
        asm!("fldcw [{}]", in(reg) &want_cw, options(nostack));
    }
    let before = avx(1.5);
    let (r12, r13, r14, r15): (u64, u64, u64, u64);
    // SAFETY: the asm sets callee-saved registers, calls an extern "C" function (which must
    // preserve them), and reads them back; clobber_abi tells the compiler about the rest.
    unsafe {
        asm!(
            "mov r12, 0x1212121212121212",
            "mov r13, 0x1313131313131313",
            "mov r14, 0x1414141414141414",
            "mov r15, 0x1515151515151515",
            "call {f}",
            f = sym do_checkpoint,
            out("r12") r12, out("r13") r13, out("r14") r14, out("r15") r15,
            clobber_abi("C"),
        );
    }
    let mut c = common::Checks::default();
    // Bits 0-5 are sticky exception flags that arithmetic sets; 6-15 are the control state.
    c.check(
        "mxcsr",
        mxcsr() & 0xffc0 == want_mxcsr,
        format!("{:#x} != {want_mxcsr:#x}", mxcsr()),
    );
    c.check(
        "x87 control word",
        x87_cw() == want_cw,
        format!("{:#x} != {want_cw:#x}", x87_cw()),
    );
    c.check(
        "callee-saved registers",
        [r12, r13, r14, r15]
            == [
                0x1212121212121212,
                0x1313131313131313,
                0x1414141414141414,
                0x1515151515151515,
            ],
        format!("{r12:#x} {r13:#x} {r14:#x} {r15:#x}"),
    );
    let after = avx(1.5);
    c.check(
        "avx arithmetic",
        before == after,
        format!("{before:?} != {after:?}"),
    );
    c.finish();
}
