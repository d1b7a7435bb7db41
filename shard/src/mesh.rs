//! The cross-core mesh: one bounded channel for every ordered pair of shards.
//!
//! Built on the main thread from glommio shared channels (which are `Send`) and handed out so
//! that shard `i` holds the senders to every other shard and the receivers from them. Each
//! message is a batch of ops for one destination, with a oneshot for the answers, so a request
//! that touches many partitions of one owner costs one message.

use futures::channel::oneshot;
use glommio::channels::shared_channel::{self, ConnectedReceiver, ConnectedSender, SharedReceiver, SharedSender};

use crate::ops::{Op, OpResult};

/// A batch of ops for one owner shard and where to send the results.
pub(crate) struct Envelope {
    pub ops: Vec<Op>,
    pub reply: oneshot::Sender<Vec<OpResult>>,
}

/// The unconnected ends of the mesh that belong to one shard.
pub(crate) struct MeshEnds {
    /// Indexed by destination shard; `None` for itself.
    pub to: Vec<Option<SharedSender<Envelope>>>,
    /// Indexed by source shard; `None` for itself.
    pub from: Vec<Option<SharedReceiver<Envelope>>>,
}

/// Makes the channels of a full mesh of `n` shards, bounded at `depth` messages each.
pub(crate) fn build(n: usize, depth: usize) -> Vec<MeshEnds> {
    let mut ends: Vec<MeshEnds> = (0..n)
        .map(|_| MeshEnds {
            to: (0..n).map(|_| None).collect(),
            from: (0..n).map(|_| None).collect(),
        })
        .collect();
    for src in 0..n {
        for dst in 0..n {
            if src != dst {
                let (tx, rx) = shared_channel::new_bounded(depth);
                ends[src].to[dst] = Some(tx);
                ends[dst].from[src] = Some(rx);
            }
        }
    }
    ends
}

/// Connected ends, inside the shard's executor.
pub(crate) struct Connected {
    pub to: Vec<Option<ConnectedSender<Envelope>>>,
    pub from: Vec<ConnectedReceiver<Envelope>>,
}

impl MeshEnds {
    /// Connects every end at once: each side of a glommio shared channel waits for its peer,
    /// so connecting one by one would deadlock two shards that each wait on the other.
    pub(crate) async fn connect(self) -> Connected {
        let senders = futures::future::join_all(self.to.into_iter().map(|s| async move {
            match s {
                Some(s) => Some(s.connect().await),
                None => None,
            }
        }));
        let receivers = futures::future::join_all(self.from.into_iter().flatten().map(|r| r.connect()));
        let (to, from) = futures::join!(senders, receivers);
        Connected { to, from }
    }
}
