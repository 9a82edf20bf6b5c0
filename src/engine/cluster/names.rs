//! The per-cluster interner of node names.
//!
//! Nodes (controllers, members, peers, probe targets) are few and appear in many keys and
//! tallies, so each is a small integer within its cluster. Routers and slots, which can be
//! many and each appear in one key, are keyed by name instead.

use std::sync::Arc;

use rustc_hash::FxHashMap as HashMap;
use serde::{Deserialize, Serialize};

/// A node's name, interned per cluster.
pub type NodeId = u32;

/// Persisted as the list of names; the index is rebuilt on restore.
#[derive(Default, Debug, Clone, Serialize, Deserialize)]
#[serde(from = "Vec<Arc<str>>", into = "Vec<Arc<str>>")]
pub(crate) struct Names {
    ids: HashMap<Arc<str>, NodeId>,
    names: Vec<Arc<str>>,
}

impl From<Vec<Arc<str>>> for Names {
    fn from(names: Vec<Arc<str>>) -> Self {
        let ids = names.iter().enumerate().map(|(i, n)| (n.clone(), i as NodeId)).collect();
        Names { ids, names }
    }
}

impl From<Names> for Vec<Arc<str>> {
    fn from(n: Names) -> Self {
        n.names
    }
}

impl Names {
    pub fn id(&mut self, name: &str) -> NodeId {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = NodeId::try_from(self.names.len()).unwrap_or(NodeId::MAX);
        let name: Arc<str> = Arc::from(name);
        self.names.push(name.clone());
        self.ids.insert(name, id);
        id
    }

    /// The id of `name`, without interning it.
    pub fn get(&self, name: &str) -> Option<NodeId> {
        self.ids.get(name).copied()
    }

    pub fn knows(&self, id: NodeId) -> bool {
        (id as usize) < self.names.len()
    }

    /// Ids come from this interner, and a restored cluster holding one it does not know is
    /// refused ([`super::Cluster::unknown_node`]): the fallback is never reached.
    pub fn name(&self, id: NodeId) -> &str {
        self.names.get(id as usize).map(|n| &**n).unwrap_or("")
    }

    pub fn names_of(&self, ids: impl IntoIterator<Item = NodeId>) -> Vec<String> {
        ids.into_iter().map(|i| self.name(i).to_string()).collect()
    }
}
