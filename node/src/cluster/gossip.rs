//! [`GossipHandler`]: foca's custom broadcasts carry cluster-map updates on SWIM packets.
//!
//! foca calls the handler for every item received (and for every item this node adds). An item
//! that is new to this node is merged and passed on (foca retransmits it a bounded number of
//! times); a stale or duplicate one is dropped, and so is one with an implausible epoch
//! (counted and logged by [`MapState::apply_from_peer`]); garbage is an error, and foca drops
//! the packet.

use std::sync::Arc;

use cfgnode_ring::UpdateKind;
use foca::{BroadcastHandler, Invalidates};

use super::state::{MapState, decode_update};
use crate::membership::Peer;

/// Which fact a broadcast is about: a newer broadcast replaces a queued older one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GossipKey {
    kind: UpdateKind,
    namespace: String,
}

impl Invalidates for GossipKey {
    fn invalidates(&self, other: &Self) -> bool {
        self == other
    }
}

/// Why a broadcast item was refused.
#[derive(Debug, thiserror::Error)]
#[error("bad cluster broadcast: {0}")]
pub struct GossipError(String);

/// Merges received updates into the map.
#[derive(Debug, Clone)]
pub struct GossipHandler {
    state: Arc<MapState>,
}

impl GossipHandler {
    /// A handler over `state`.
    pub fn new(state: Arc<MapState>) -> Self {
        GossipHandler { state }
    }
}

impl BroadcastHandler<Peer> for GossipHandler {
    type Key = GossipKey;
    type Error = GossipError;

    fn receive_item(
        &mut self,
        data: &[u8],
        sender: Option<&Peer>,
    ) -> Result<Option<GossipKey>, GossipError> {
        let update = decode_update(data).map_err(GossipError)?;
        let key = GossipKey {
            kind: update.kind(),
            namespace: update.namespace().to_string(),
        };
        let Some(sender) = sender else {
            // Added by this node: already merged (and saved) by the code that made it.
            return Ok(Some(key));
        };
        // An implausible epoch is refused as "no change": not passed on, and not an error, so
        // the rest of the packet is still used.
        let changed = self
            .state
            .apply_from_peer(update, &sender.id)
            .map_err(GossipError)?;
        Ok(changed.then_some(key))
    }
}
