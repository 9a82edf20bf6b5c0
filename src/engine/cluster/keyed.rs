//! The maps of keys that can number millions (routers, terminator slots), which remember
//! which of their keys changed, so that a commit writes those entries and not all of them.
//!
//! Every way to change a value goes through here and marks its key; reading does not. The
//! marks exist only while the engine tracks changes (a daemon with a state store), so that
//! `herald replay` pays nothing for them.

use std::sync::Arc;

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub(crate) struct Keyed<V> {
    map: HashMap<Arc<str>, V>,
    /// Keys changed (or removed) since the last [`Keyed::take_changed`], when tracking.
    changed: Option<HashSet<Arc<str>>>,
    /// Keys a restore found must be written again, until tracking begins: an engine that
    /// never tracks then holds them once, not every key it changes later.
    rewrite: Vec<Arc<str>>,
}

impl<V> Default for Keyed<V> {
    fn default() -> Self {
        Keyed { map: HashMap::default(), changed: None, rewrite: Vec::new() }
    }
}

impl<V> Keyed<V> {
    pub fn track(&mut self) {
        let changed = self.changed.get_or_insert_with(HashSet::default);
        changed.extend(self.rewrite.drain(..));
    }

    fn mark(changed: &mut Option<HashSet<Arc<str>>>, key: &Arc<str>) {
        if let Some(changed) = changed {
            // One lookup: a key already marked just drops the clone.
            changed.insert(key.clone());
        }
    }

    pub fn get(&self, key: &str) -> Option<&V> {
        self.map.get(key)
    }

    pub fn get_key_value(&self, key: &str) -> Option<(&Arc<str>, &V)> {
        self.map.get_key_value(key)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    /// The value of `key`, to change: the key is marked changed.
    pub fn get_mut(&mut self, key: &Arc<str>) -> Option<&mut V> {
        let value = self.map.get_mut(key)?;
        Self::mark(&mut self.changed, key);
        Some(value)
    }

    pub fn insert(&mut self, key: Arc<str>, value: V) {
        Self::mark(&mut self.changed, &key);
        self.map.insert(key, value);
    }

    pub fn remove(&mut self, key: &Arc<str>) -> Option<V> {
        let removed = self.map.remove(key)?;
        Self::mark(&mut self.changed, key);
        Some(removed)
    }

    /// Keys marked changed since the last [`Keyed::take_changed`].
    pub fn changed_len(&self) -> usize {
        self.changed.as_ref().map_or(0, |c| c.len())
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn keys(&self) -> impl Iterator<Item = &Arc<str>> {
        self.map.keys()
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.map.values()
    }

    /// The keys changed since the last call, each with its value now (`None`: removed).
    pub fn take_changed(&mut self) -> Vec<(Arc<str>, Option<&V>)> {
        let Some(changed) = self.changed.as_mut().filter(|c| !c.is_empty()) else {
            return Vec::new();
        };
        let keys = std::mem::take(changed);
        keys.into_iter()
            .map(|k| {
                let v = self.map.get(&k);
                (k, v)
            })
            .collect()
    }

    /// Restores one entry, unmarked.
    pub fn restore(&mut self, key: Arc<str>, value: V) {
        self.map.insert(key, value);
    }

    /// Every value, to finish a restore: `changed(key, value)` says which ones must be
    /// written again, and those are marked, now or when tracking begins.
    pub fn restore_each(&mut self, mut changed: impl FnMut(&Arc<str>, &mut V) -> bool) {
        for (key, value) in self.map.iter_mut() {
            if changed(key, value) {
                match &mut self.changed {
                    Some(set) => {
                        set.insert(key.clone());
                    }
                    None => self.rewrite.push(key.clone()),
                }
            }
        }
    }
}

impl<'a, V> IntoIterator for &'a Keyed<V> {
    type Item = (&'a Arc<str>, &'a V);
    type IntoIter = std::collections::hash_map::Iter<'a, Arc<str>, V>;

    fn into_iter(self) -> Self::IntoIter {
        self.map.iter()
    }
}

/// Snapshots (format 2) hold the map as a plain map.
impl<V: Serialize> Serialize for Keyed<V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.map.serialize(s)
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Keyed<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Keyed { map: HashMap::deserialize(d)?, changed: None, rewrite: Vec::new() })
    }
}
