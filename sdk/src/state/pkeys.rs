//! Memory protection keys (`pkey_alloc`, `pkey_mprotect`; x86 PKU): which keys the process holds
//! and which key tags each mapping. V8 tags its WebAssembly code with a key of its own, which it
//! asks for at startup, and treats a `pkey_mprotect` that fails as fatal: a restored Node without
//! its key died compiling its first WebAssembly module (every `fetch()`), and its code pages had
//! lost the key that keeps them from being written. Each thread's rights to each key (PKRU) come
//! back with the rest of its extended register state.
//!
//! Dump: the keys held, probed on a scratch page (no /proc file lists them) before and after the
//! snapshot (a change in between starts the checkpoint again), and each mapping's key from
//! smaps (`ProtectionKey:`). A mapping that is executable only (`PROT_EXEC` alone) carries the
//! kernel's own execute-only key, which it takes by itself, lowest free first, and which a
//! restore cannot hand it: refused. Restore: the keys allocated again first, before any
//! mapping, lowest first as the kernel gives them (a new process holds none), those the process
//! did not hold freed; each mapping tagged with its key once its memory is filled (an access the
//! restorer makes under its own rights would fault on a tagged page).

use crate::restore::Plan;
use crate::state::memory::Vma;

/// The highest protection key (x86 has 16, key 0 being every mapping's default).
pub const MAX_KEY: u32 = 15;

/// The keys the process holds besides key 0.
pub fn dump() -> Vec<u32> {
    crate::sys::pkeys_allocated()
}

/// Checks an image's keys: in 1..=MAX_KEY, each once, and every mapping's key among them.
pub fn validate(keys: &[u32], memory: &[Vma]) -> Result<(), String> {
    let mut seen = 0u32;
    for &k in keys {
        if k == 0 || k > MAX_KEY || seen & (1 << k) != 0 {
            return Err(format!("protection key {k}"));
        }
        seen |= 1 << k;
    }
    match memory
        .iter()
        .find(|v| v.pkey != 0 && (v.pkey > MAX_KEY || seen & (1 << v.pkey) == 0))
    {
        Some(v) => Err(format!(
            "mapping {:x}-{:x}: protection key {} not held",
            v.start, v.end, v.pkey
        )),
        None => Ok(()),
    }
}

/// Executable-only mappings tagged with a key (the kernel's execute-only key), as refusals.
pub fn refusals(memory: &[Vma]) -> Vec<String> {
    memory
        .iter()
        .filter(|v| v.pkey != 0 && v.prot == libc::PROT_EXEC as u32)
        .map(|v| {
            format!(
                "mapping {:x}-{:x}: executable only, with the kernel's execute-only protection key {}, which a restore cannot give back under that number: map it readable too (PROT_READ | PROT_EXEC)",
                v.start, v.end, v.pkey
            )
        })
        .collect()
}

/// Plans the keys: first, before any mapping exists.
pub fn plan_keys(keys: &[u32], plan: &mut Plan) {
    let Some(&top) = keys.iter().max() else {
        return;
    };
    for k in 1..=top {
        plan.syscall(
            format!(
                "allocate memory protection key {k} (pkey_alloc: this CPU or kernel may have none)"
            ),
            libc::SYS_pkey_alloc,
            [0, 0, 0, 0, 0, 0],
        );
    }
    for k in (1..top).filter(|k| !keys.contains(k)) {
        plan.syscall(
            format!("free memory protection key {k}"),
            libc::SYS_pkey_free,
            [u64::from(k), 0, 0, 0, 0, 0],
        );
    }
}

/// Plans the mappings' tags, once their memory is filled.
pub fn plan_tags(memory: &[Vma], plan: &mut Plan) {
    for v in memory.iter().filter(|v| v.pkey != 0) {
        plan.syscall(
            format!(
                "tag {:x}-{:x} with protection key {}",
                v.start, v.end, v.pkey
            ),
            libc::SYS_pkey_mprotect,
            [
                v.start,
                v.end - v.start,
                u64::from(v.prot),
                u64::from(v.pkey),
                0,
                0,
            ],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vma(pkey: u32) -> Vma {
        Vma {
            start: 0x1000,
            end: 0x2000,
            pkey,
            ..Default::default()
        }
    }

    #[test]
    fn an_image_names_only_keys_it_holds() {
        assert!(validate(&[1, 3], &[vma(0), vma(1), vma(3)]).is_ok());
        assert!(validate(&[1], &[vma(2)]).is_err());
        assert!(validate(&[1], &[vma(33)]).is_err());
        for bad in [vec![0], vec![16], vec![1, 1]] {
            assert!(validate(&bad, &[]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn keys_are_taken_lowest_first_and_the_others_given_back() {
        let mut plan = Plan::new(0x1000);
        plan_keys(&[1, 3], &mut plan);
        plan_tags(&[vma(3)], &mut plan);
        let labels: Vec<&str> = (0..plan.first_len()).map(|i| plan.label(i)).collect();
        assert_eq!(labels.len(), 5, "{labels:?}");
        assert!(
            labels[3].starts_with("free memory protection key 2"),
            "{labels:?}"
        );
        assert!(labels[4].contains("with protection key 3"), "{labels:?}");
    }
}
