//! A bounded map from request text to a derived answer (a parsed user
//! agent, a normalised page URL), shared by the handlers.
//!
//! Real traffic repeats its agents and pages, and deriving the answer costs
//! thousands of instructions where a lookup costs a few hundred. The answer
//! must depend on the text alone, so a remembered one equals a fresh one.
//! Memory is bounded by `capacity` entries; a full map starts over rather
//! than tracking recency, which would cost every hit a write. A poisoned
//! lock only turns the cache off.

use std::collections::HashMap;
use std::sync::RwLock;

pub struct Recent<V> {
    map: RwLock<HashMap<String, V>>,
    capacity: usize,
}

impl<V: Clone> Recent<V> {
    pub fn new(capacity: usize) -> Self {
        Recent {
            map: RwLock::new(HashMap::new()),
            capacity,
        }
    }

    /// The answer for `key`, if remembered.
    pub fn get(&self, key: &str) -> Option<V> {
        self.map.read().ok().and_then(|m| m.get(key).cloned())
    }

    /// Remember `value` for `key`.
    pub fn insert(&self, key: &str, value: V) {
        if let Ok(mut m) = self.map.write() {
            if m.len() >= self.capacity {
                m.clear();
            }
            m.insert(key.to_owned(), value);
        }
    }

    pub fn len(&self) -> usize {
        self.map.read().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::Recent;

    #[test]
    fn remembers_and_stays_bounded() {
        let recent = Recent::new(3);
        assert_eq!(recent.get("a"), None);
        recent.insert("a", 1);
        assert_eq!(recent.get("a"), Some(1));
        for (i, k) in ["b", "c", "d", "e"].into_iter().enumerate() {
            recent.insert(k, i);
            assert!(recent.len() <= 3);
        }
        assert_eq!(recent.get("e"), Some(3));
    }
}
