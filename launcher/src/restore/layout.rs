//! The restorer region: a hole free in both the launcher's and the image's address space, holding
//! the restorer's code, stack, data arena, steps and a scratch area for moving the vDSO.
//!
//! ```text
//!  base    +4 KiB       +68 KiB                     arena end (64-byte aligned)
//!  │ code  │ stack 64K  │ 4 KiB stack per thread … │ arena │ steps │ control │ … │ vDSO scratch │
//! ```

use thaw::restore::Plan;
use thaw::state::platform::VdsoLayout;
use thaw::state::Manifest;

use super::restorer::{self, Control};
use crate::exit::{Code, Failure, Result};
use crate::sys;

const PAGE: u64 = 4096;
const CODE_LEN: u64 = PAGE;
const STACK_LEN: u64 = 64 * 1024;
/// Restorer stack of every further thread (the routine itself only pushes on failure).
pub const THREAD_STACK_LEN: u64 = 4096;
/// Address space reserved for the region; what is not used stays unmapped.
const RESERVE: u64 = 64 << 20;
/// Highest user address on x86_64 with 4-level page tables.
const TASK_SIZE: u64 = 0x7fff_ffff_f000;

fn failed(msg: impl std::fmt::Display) -> Failure {
    Failure::new(Code::RestoreFailed, msg)
}

#[derive(Debug)]
pub struct Region {
    pub base: u64,
    /// Length reserved for the restored process to unmap (covers the vDSO scratch).
    pub len: u64,
    vdso: Vec<(String, u64, u64)>,
    threads: u64,
}

impl Region {
    /// Finds a 64 MiB hole free in both address spaces (the launcher's is read now; mapping with
    /// MAP_FIXED_NOREPLACE later confirms it).
    pub fn reserve(m: &Manifest) -> Result<Region> {
        let threads = m.threads.len().saturating_sub(1) as u64;
        let mut used: Vec<(u64, u64)> = m.memory.iter().map(|v| (v.start, v.end)).collect();
        let mine = thaw::procfs::maps(std::process::id() as i32)
            .map_err(|e| failed(format!("cannot read /proc/self/maps: {e}")))?;
        used.extend(mine.iter().map(|v| (v.start, v.end)));
        // The launcher's own [vvar], [vvar_vclock], [vdso], in address order.
        let vdso = mine
            .into_iter()
            .filter(|m| matches!(m.name.as_str(), "[vvar]" | "[vvar_vclock]" | "[vdso]"))
            .map(|m| (m.name, m.start, m.end))
            .collect();
        let free = |base: u64| used.iter().all(|&(s, e)| e <= base || s >= base + RESERVE);
        let base = (1u64 << 36..TASK_SIZE - RESERVE)
            .step_by(RESERVE as usize)
            .find(|&b| free(b))
            .ok_or_else(|| failed("no address range is free in both the launcher and the image"))?;
        Ok(Region {
            base,
            len: RESERVE,
            vdso,
            threads,
        })
    }

    /// The restorer's code page (the last part of the region the threads leave through).
    pub fn code_page(&self) -> (u64, u64) {
        (self.base, CODE_LEN)
    }

    /// Top of the restorer stack for further thread `i` (0-based).
    pub fn thread_stack(&self, i: u64) -> (u64, u64) {
        (
            self.base + CODE_LEN + STACK_LEN + i * THREAD_STACK_LEN,
            THREAD_STACK_LEN,
        )
    }

    pub fn arena_base(&self) -> u64 {
        self.base + CODE_LEN + STACK_LEN + self.threads * THREAD_STACK_LEN
    }

    fn scratch(&self) -> u64 {
        let span = self.vdso.last().map_or(0, |v| v.2) - self.vdso.first().map_or(0, |v| v.1);
        self.base + self.len - span.next_multiple_of(PAGE)
    }

    /// Unmaps everything of the launcher except this region and its vDSO (the complement, so
    /// that memory the launcher maps after this list is built goes too).
    pub fn plan_unmap_launcher(&self, plan: &mut Plan) {
        let mut keep: Vec<(u64, u64)> = self.vdso.iter().map(|v| (v.1, v.2)).collect();
        keep.push((self.base, self.base + self.len));
        keep.sort_unstable();
        let mut from = 0u64;
        for (s, e) in keep
            .into_iter()
            .chain(std::iter::once((TASK_SIZE, TASK_SIZE)))
        {
            if s > from {
                plan.syscall(
                    format!("unmap the launcher at {from:x}-{s:x}"),
                    libc::SYS_munmap,
                    [from, s - from, 0, 0, 0, 0],
                );
            }
            from = from.max(e);
        }
    }

    /// Moves [vvar], [vvar_vclock], [vdso] to the image's addresses, keeping their relative
    /// layout (the vDSO code finds its data at fixed offsets): first all into the scratch area,
    /// then each to its place, so that no move lands on a region not yet moved.
    pub fn plan_move_vdso(&self, plan: &mut Plan, image: &VdsoLayout) -> Result<()> {
        let Some(first) = self.vdso.first() else {
            return Ok(());
        };
        let img_base = image.regions.first().map_or(0, |r| r.start);
        let scratch = self.scratch();
        let flags = (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as u64;
        for (name, s, e) in &self.vdso {
            plan.syscall(
                format!("move {name} aside"),
                libc::SYS_mremap,
                [*s, e - s, e - s, flags, scratch + (s - first.1), 0],
            );
        }
        for (name, s, e) in &self.vdso {
            let target = image
                .regions
                .iter()
                .find(|r| &r.name == name)
                .map(|r| r.start)
                .ok_or_else(|| Failure::new(Code::Refused, format!("image has no {name}")))?;
            debug_assert_eq!(target - img_base, s - first.1);
            plan.syscall(
                format!("move {name} to {target:x}"),
                libc::SYS_mremap,
                [scratch + (s - first.1), e - s, e - s, flags, target, 0],
            );
        }
        Ok(())
    }

    /// Maps the region and writes the code, arena, steps and control block into it. Returns
    /// (entry point, control block address, initial stack pointer).
    pub fn install(&self, plan: &Plan, error_fd: i32) -> Result<(u64, u64, u64)> {
        let code = restorer::code();
        let arena = plan.arena();
        let all_steps = plan.steps();
        let steps_addr = (self.arena_base() + arena.len() as u64).next_multiple_of(64);
        let step_bytes = std::mem::size_of_val(all_steps.as_slice()) as u64;
        let control_addr = steps_addr + step_bytes;
        let used = (control_addr + 64 - self.base).next_multiple_of(PAGE);
        if used > self.scratch() - self.base || code.len() as u64 > CODE_LEN {
            return Err(failed(format!(
                "the restore plan needs {used} bytes, more than the {} reserved",
                self.len
            )));
        }
        sys::map_fixed(self.base, used).map_err(|e| {
            failed(format!(
                "cannot map the restorer region at {:x}: {e}",
                self.base
            ))
        })?;
        sys::write_region(self.base, code);
        sys::write_region(self.arena_base(), arena);
        let steps: Vec<u8> = all_steps
            .iter()
            .flat_map(|s| {
                std::iter::once(s.op)
                    .chain(std::iter::once(s.nr))
                    .chain(s.args)
                    .flat_map(u64::to_ne_bytes)
            })
            .collect();
        sys::write_region(steps_addr, &steps);
        let control = Control {
            steps: steps_addr,
            count: plan.first_len() as u64,
            error_fd: error_fd as u64,
        };
        let control_bytes: Vec<u8> = [control.steps, control.count, control.error_fd]
            .into_iter()
            .flat_map(u64::to_ne_bytes)
            .collect();
        sys::write_region(control_addr, &control_bytes);
        sys::mprotect(self.base, CODE_LEN, libc::PROT_READ | libc::PROT_EXEC)
            .map_err(|e| failed(format!("cannot protect the restorer code: {e}")))?;
        Ok((self.base, control_addr, self.base + CODE_LEN + STACK_LEN))
    }
}
