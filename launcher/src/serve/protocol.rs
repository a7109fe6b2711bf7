//! What `thaw run --via` and `thaw serve` say to each other over the server's socket
//! (`SOCK_SEQPACKET`, one postcard message per packet).
//!
//! The caller opens with a [`Call`] that carries its standard input, output and error
//! (SCM_RIGHTS); then it may send [`ToServer`] messages. The server answers with [`ToCaller`]
//! messages: `Queued` when it must wait for a slot, `Started`, then `Exited`; or `Failed` at any
//! point.

use serde::{Deserialize, Serialize};

/// A request for an instance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Call {
    /// The instance's arguments (what `thaw run` gives after `--`).
    pub args: Vec<Vec<u8>>,
    /// Its environment, `KEY=VALUE`.
    pub env: Vec<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToServer {
    /// Pass this signal on to the instance.
    Signal(i32),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToCaller {
    /// The instance runs, with this PID in its namespace.
    Started { pid: i32 },
    /// The instance ended: exit status (128+N for signal N).
    Exited { status: i32 },
    /// No instance, or it failed while being restored: an exit code and a one-line message.
    Failed { code: u8, message: String },
    /// Every one of the server's `max` instance slots is taken: the call waits for one.
    Queued { max: u32 },
}

/// The largest message either side sends, besides the call's arguments.
pub const SMALL: usize = 4096;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let call = Call {
            args: vec![b"Oslo".to_vec()],
            env: vec![b"A=b".to_vec()],
        };
        let bytes = postcard::to_allocvec(&call).unwrap();
        assert_eq!(postcard::from_bytes::<Call>(&bytes).unwrap(), call);
        for m in [
            ToCaller::Started { pid: 42 },
            ToCaller::Exited { status: 3 },
            ToCaller::Queued { max: 64 },
            ToCaller::Failed {
                code: 67,
                message: "no".into(),
            },
        ] {
            let bytes = postcard::to_allocvec(&m).unwrap();
            assert!(bytes.len() < SMALL);
            assert_eq!(postcard::from_bytes::<ToCaller>(&bytes).unwrap(), m);
        }
    }
}
