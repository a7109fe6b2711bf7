//! `thaw run [OPTIONS] IMAGE [-- ARGS...]`: verify, check, restore, supervise.

use std::ffi::OsString;
use std::path::PathBuf;

use thaw::image::ImageFile;

use super::TrustArgs;
use crate::exit::{Code, Failure, Result};
use crate::privilege::Context;
use crate::restore::{self, PidMode, Request};

/// Restore a process from a signed image, with its original PID and memory layout. The launcher
/// exits with the restored process's exit status (128+N if a signal N ended it).
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    trust: TrustArgs,
    /// Where the restored process gets its PID: host (needs root or CAP_CHECKPOINT_RESTORE), ns
    /// (a new user+PID namespace, any user), auto (host when permitted and the PID is free).
    #[arg(long, value_enum, default_value = "auto")]
    pid_mode: PidMode,
    /// Development only: restore an unsigned image. Refused when the launcher runs with elevated
    /// privileges.
    #[arg(long)]
    insecure_allow_unsigned: bool,
    image: PathBuf,
    /// Arguments for the restored process (after `--`).
    #[arg(last = true)]
    args: Vec<OsString>,
}

pub fn run(args: Args, ctx: &Context) -> Result {
    let file = ImageFile::open(&args.image)?;
    let image = if args.insecure_allow_unsigned && file.trailer().signer().is_none() {
        if ctx.elevated {
            return Err(Failure::new(
                Code::Signature,
                "--insecure-allow-unsigned is refused: this launcher runs with elevated privileges",
            ));
        }
        eprintln!(
            "thaw: WARNING: restoring an UNSIGNED image: its contents are not verified by anyone"
        );
        file.decode_unverified()?
    } else {
        file.verify(&args.trust.load(ctx)?)?
    };
    image.verify_payload()?;
    let status = restore::run(
        &image,
        Request {
            pid_mode: args.pid_mode,
            args: args.args,
        },
    )?;
    std::process::exit(status);
}
