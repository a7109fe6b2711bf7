//! The fields of `prctl(PR_SET_MM, PR_SET_MM_MAP)`: the layout markers /proc shows, auxv, exe.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MmMap {
    pub start_code: u64,
    pub end_code: u64,
    pub start_data: u64,
    pub end_data: u64,
    pub start_brk: u64,
    pub brk: u64,
    pub start_stack: u64,
    pub arg_start: u64,
    pub arg_end: u64,
    pub env_start: u64,
    pub env_end: u64,
    /// The auxiliary vector as (type, value) words, terminated by AT_NULL.
    pub auxv: Vec<u64>,
    pub exe: ExeInfo,
}

/// The executable, identified well enough to tell whether it is still the same file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExeInfo {
    pub path: String,
    pub id: super::FileId,
    pub size: u64,
    pub mtime_ns: i128,
}

use crate::procfs;
use crate::restore::Plan;

impl MmMap {
    /// Reads the frozen child's layout markers; `brk` was taken in the signal handler.
    pub(crate) fn dump(child: i32, brk: u64) -> std::io::Result<MmMap> {
        let stat = procfs::stat_fields(child)?;
        let num = |i: usize| stat.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let auxv_bytes = std::fs::read(format!("/proc/{child}/auxv"))?;
        let auxv = auxv_bytes
            .chunks_exact(8)
            .map(|c| u64::from_ne_bytes(c.try_into().expect("8 bytes")))
            .collect();
        let exe = std::fs::read_link(format!("/proc/{child}/exe"))?;
        let meta = std::fs::metadata(format!("/proc/{child}/exe"))?;
        use std::os::unix::fs::MetadataExt;
        Ok(MmMap {
            start_code: num(26),
            end_code: num(27),
            start_stack: num(28),
            start_data: num(45),
            end_data: num(46),
            start_brk: num(47),
            brk,
            arg_start: num(48),
            arg_end: num(49),
            env_start: num(50),
            env_end: num(51),
            auxv,
            exe: ExeInfo {
                path: exe.to_string_lossy().into_owned(),
                id: super::FileId::of(&meta),
                size: meta.size(),
                mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            },
        })
    }

    /// `prctl(PR_SET_MM, PR_SET_MM_MAP)`, with `exe_fd` (an open descriptor of the executable in
    /// the new process) when the launcher may set /proc/self/exe.
    pub fn plan_restore(&self, plan: &mut Plan, exe_fd: Option<i32>) {
        let auxv: Vec<u8> = self.auxv.iter().flat_map(|w| w.to_ne_bytes()).collect();
        let auxv_addr = plan.data(&auxv);
        let exe = exe_fd.map_or(u32::MAX, |fd| fd as u32);
        let tail = u64::from(auxv.len() as u32) | (u64::from(exe) << 32);
        let map = plan.words(&[
            self.start_code,
            self.end_code,
            self.start_data,
            self.end_data,
            self.start_brk,
            self.brk,
            self.start_stack,
            self.arg_start,
            self.arg_end,
            self.env_start,
            self.env_end,
            auxv_addr,
            tail,
        ]);
        plan.syscall(
            if exe_fd.is_some() {
                format!("prctl(PR_SET_MM_MAP) with exe {}", self.exe.path)
            } else {
                "prctl(PR_SET_MM_MAP)".to_owned()
            },
            libc::SYS_prctl,
            [
                libc::PR_SET_MM as u64,
                libc::PR_SET_MM_MAP as u64,
                map,
                13 * 8,
                0,
                0,
            ],
        );
    }
}
