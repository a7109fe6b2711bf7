//! Signal dispositions, recorded with the raw kernel `rt_sigaction` layout.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalState {
    /// Every signal whose disposition is not SIG_DFL with no flags.
    pub actions: Vec<SigAction>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigAction {
    pub signo: u32,
    pub handler: u64,
    pub flags: u64,
    pub restorer: u64,
    pub mask: u64,
}

use crate::capture::Capture;
use crate::restore::Plan;

impl SignalState {
    /// The dispositions the handler recorded (the checkpoint signal's own is the application's,
    /// passed as `checkpoint_signal_action`).
    pub(crate) fn dump(c: &Capture, signal: i32, original: SigAction) -> SignalState {
        let mut actions = Vec::new();
        for signo in 1..=64usize {
            let a = c.action(signo);
            let a = if signo as i32 == signal {
                original
            } else {
                SigAction {
                    signo: signo as u32,
                    handler: a.handler,
                    flags: a.flags,
                    restorer: a.restorer,
                    mask: a.mask,
                }
            };
            if a.handler != 0 || a.flags != 0 || a.mask != 0 {
                actions.push(a);
            }
        }
        SignalState { actions }
    }

    /// Sets every catchable signal to its recorded disposition, or the default: the new process
    /// must not keep a disposition inherited from the launcher.
    pub fn plan_restore(&self, plan: &mut Plan) {
        for signo in 1..=64u32 {
            if signo == libc::SIGKILL as u32 || signo == libc::SIGSTOP as u32 {
                continue;
            }
            let a = self
                .actions
                .iter()
                .find(|a| a.signo == signo)
                .copied()
                .unwrap_or(SigAction {
                    signo,
                    ..Default::default()
                });
            let act = plan.words(&[a.handler, a.flags, a.restorer, a.mask]);
            plan.syscall(
                format!("sigaction for signal {signo}"),
                libc::SYS_rt_sigaction,
                [u64::from(signo), act, 0, 8, 0, 0],
            );
        }
    }
}
