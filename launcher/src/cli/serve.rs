//! `thaw serve IMAGE --socket PATH`: verify once, restore once into a template, fork an instance
//! for each caller (`thaw run --via PATH -- ARGS`).

use std::path::PathBuf;

use thaw::image::ImageFile;

use super::TrustArgs;
use crate::exit::{Code, Failure, Result};
use crate::privilege::Context;
use crate::restore::{self, template::Template};
use crate::sys;

/// Serve instances of one image: it is verified and restored once into a frozen template, and
/// each caller of the socket (`thaw run --via SOCKET -- ARGS`) gets an instance forked from it,
/// with the image's PID in a PID namespace of its own, the caller's arguments, environment and
/// standard descriptors, and memory shared copy-on-write with every other instance. The server
/// runs as root; it serves callers with its own credentials. SIGHUP reloads the image from the
/// same path (running instances go on); SIGQUIT stops taking callers and ends once the running
/// instances have; SIGINT and SIGTERM end it and every instance at once.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(flatten)]
    trust: TrustArgs,
    /// The socket to listen at (created readable and writable by its owner only).
    #[arg(long)]
    socket: PathBuf,
    /// At most this many instances run at once; further callers wait for one to end.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    max_instances: u32,
    /// Instances forked ahead of callers, waiting for their arguments: a caller then pays no
    /// fork (each holds a copy of the page tables and a PID namespace). 0 forks on demand.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(0..=64))]
    spares: u32,
    /// Serve even when the image's clocks are ahead of this machine's and no time namespace can
    /// keep them continuous (see `thaw run --allow-clock-jump`).
    #[arg(long)]
    allow_clock_jump: bool,
    /// The image file.
    image: PathBuf,
}

pub fn run(args: Args, ctx: &Context) -> Result {
    if ctx.elevated {
        return Err(Failure::new(
            Code::Refused,
            "thaw serve is not available from a launcher with elevated privileges (set-uid or file capabilities): run it as root",
        ));
    }
    if !restore::has_cap(restore::CAP_SYS_ADMIN)
        || !restore::has_cap(restore::CAP_CHECKPOINT_RESTORE)
    {
        return Err(Failure::new(
            Code::Refused,
            "thaw serve needs root (CAP_SYS_ADMIN and CAP_CHECKPOINT_RESTORE) to give each instance a PID namespace with the image's PID; use thaw run --pid-mode ns meanwhile",
        ));
    }
    // Read again on SIGHUP: a server reloads the image at the same path.
    let load = || -> Result<Template> {
        let file = ImageFile::open(&args.image)?;
        let image = file.verify(&args.trust.load(ctx)?)?;
        restore::prepare_descriptor_table(&image);
        // Every instance is forked from memory read once: it is read from a sealed private
        // copy, verified whole, so that nothing done to the file later reaches an instance.
        let h = image.header();
        let copy = sys::sealable_memfd(c"thaw-image", h.payload_off + h.payload_len)
            .map_err(|e| Failure::new(Code::Io, format!("cannot create the private copy: {e}")))?;
        image.verify_chunks(&|_| true, Some(&copy))?;
        sys::seal(&copy)
            .map_err(|e| Failure::new(Code::Io, format!("cannot seal the private copy: {e}")))?;
        // A template made on reload starts with copies of the callers' files in flight.
        crate::serve::while_forking(|| Template::start(image, copy, args.allow_clock_jump))
    };
    let first = load()?;
    crate::serve::serve(
        first,
        &args.socket,
        args.max_instances as usize,
        args.spares as usize,
        &load,
    )
}
