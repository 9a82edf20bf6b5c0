//! A hash map written in key order: the same contents are then the same bytes, so a store or
//! a compacted topic sees no change where there was none, `/state` reads the same from one
//! call to the next, and tests compare bytes. Kept in a hash map, not a sorted tree, where
//! keys come by the million and every update would compare a score of them.

use std::collections::HashMap;
use std::hash::BuildHasher;

use serde::{Serialize, Serializer};

pub fn in_key_order<S, K, V, H>(map: &HashMap<K, V, H>, s: S) -> Result<S::Ok, S::Error>
where
    S: Serializer,
    K: Ord + Serialize,
    V: Serialize,
    H: BuildHasher,
{
    let mut pairs: Vec<(&K, &V)> = map.iter().collect();
    pairs.sort_unstable_by(|a, b| a.0.cmp(b.0));
    s.collect_map(pairs)
}
