//! Letting keys go (DESIGN §5.2): a per-entity key with no record for `key_ttl` whose state is
//! negative or removed (a member gone, a router offline, a slot quiet), with nothing pending,
//! is evicted with its metrics, so memory stays bounded by the live keys.
//!
//! Each key has one eviction check on the schedule. A check that finds the key still in use
//! re-arms itself for later rather than being rescheduled by every record, which keeps a
//! record's cost independent of eviction.

use super::key::StateKey;
use super::names::NodeId;
use super::Cluster;
use crate::engine::window::{StabilityWindow, StateValue};
use crate::engine::Evicted;
use crate::model::Timestamp;

impl Cluster {
    fn removed_member(&self, node: NodeId) -> bool {
        self.members.emitted().is_some_and(|m| !m.0.contains(&node))
    }

    /// The last record time of `key`, and whether its state lets it go: negative, removed or
    /// quiet, with nothing pending.
    fn eviction_state(&self, key: &StateKey) -> Option<(Timestamp, bool)> {
        fn negative<V: StateValue>(w: &StabilityWindow<V>) -> bool {
            w.pending().is_none() && w.emitted().is_none_or(|v| v.is_negative())
        }
        match key {
            StateKey::LeaderView(n) => {
                let k = self.views.get(n)?;
                let idle = k.window.pending().is_none();
                Some((k.last_record, idle && (negative(&k.window) || self.removed_member(*n))))
            }
            StateKey::Peer(n, p) => {
                let k = self.peers.get(&(*n, *p))?;
                let idle = k.window.pending().is_none();
                let gone = self.removed_member(*n) || self.removed_member(*p);
                Some((k.last_record, idle && (negative(&k.window) || gone)))
            }
            StateKey::Router(r) => {
                let k = self.routers.get(r)?;
                Some((k.last_record, negative(&k.window)))
            }
            StateKey::Alive(n) => {
                let k = self.nodes.get(n)?;
                let idle = k.window.pending().is_none();
                Some((k.last_record, idle && (negative(&k.window) || self.removed_member(*n))))
            }
            StateKey::Slot(s) => {
                let k = self.slots.get(s)?;
                Some((k.last_record, k.is_quiet()))
            }
            StateKey::Leader | StateKey::ReadOnly | StateKey::Members | StateKey::SplitBrain => {
                None
            }
        }
    }

    /// Evicts `key` if it has had no record for the key TTL and may go. Returns `Err(next)`
    /// with when to look again, or what was evicted.
    pub fn try_evict(
        &mut self,
        key: &StateKey,
        now: Timestamp,
    ) -> Result<Option<Evicted>, Timestamp> {
        if !key.kind().per_entity {
            return Ok(None);
        }
        let ttl = self.params.key_ttl;
        let Some((last, may_go)) = self.eviction_state(key) else {
            return Ok(None);
        };
        let expires = last.saturating_add(ttl);
        let again = match () {
            _ if expires > now => Some(expires),
            _ if !may_go => Some(now.saturating_add(ttl)),
            _ => None,
        };
        if let Some(next) = again {
            // Routers and slots hold their check's time in their entries.
            match key {
                StateKey::Router(r) => {
                    if let Some(router) = self.routers.get_mut(r) {
                        router.check = next;
                    }
                }
                StateKey::Slot(s) => {
                    if let Some(slot) = self.slots.get_mut(s) {
                        slot.check = next;
                    }
                }
                _ => {}
            }
            return Err(next);
        }
        match key {
            StateKey::LeaderView(n) => {
                self.views.remove(n);
            }
            StateKey::Peer(n, p) => {
                if let Some(link) = self.peers.remove(&(*n, *p)) {
                    // The link's raw record leaves the peer's tally with it.
                    if !link.connected && n != p {
                        if let Some(c) = self.disconnected_by.get_mut(p) {
                            *c = c.saturating_sub(1);
                        }
                    }
                }
            }
            StateKey::Router(r) => {
                self.routers.remove(r);
            }
            StateKey::Alive(n) => {
                self.nodes.remove(n);
            }
            StateKey::Slot(s) => {
                self.slots.remove(s);
            }
            StateKey::Leader | StateKey::ReadOnly | StateKey::Members | StateKey::SplitBrain => {}
        }
        self.hidden.remove(key);
        Ok(Some(Evicted {
            cluster: self.name.to_string(),
            key: key.kind().name,
            subject: key.subject(&self.names).to_strings(),
        }))
    }
}
