//! A map with a fixed capacity that evicts its oldest entry (by insertion)
//! when full: the memory bound for the auth cache and the brute-force
//! tables, which a flood of distinct users or addresses must not grow.
//!
//! Insertion order is kept in a queue of `(key, generation)`; re-inserting
//! a key gives it a new generation, so stale queue slots are skipped on
//! eviction and compacted away when the queue gets twice as long as the
//! map.  Every operation is O(1) amortised.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

pub struct BoundedMap<K, V> {
    capacity: usize,
    map: HashMap<K, (u64, V)>,
    order: VecDeque<(K, u64)>,
    next: u64,
}

impl<K: Hash + Eq + Clone, V> BoundedMap<K, V> {
    /// A map holding at most `capacity` entries (at least one).
    pub fn new(capacity: usize) -> Self {
        BoundedMap {
            capacity: capacity.max(1),
            map: HashMap::new(),
            order: VecDeque::new(),
            next: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Change the bound; a smaller one takes effect at the next insert.
    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity.max(1);
    }

    pub fn get(&self, key: &K) -> Option<&V> {
        self.map.get(key).map(|(_, v)| v)
    }

    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.map.get_mut(key).map(|(_, v)| v)
    }

    pub fn remove(&mut self, key: &K) -> Option<V> {
        // The queue slot goes stale and is skipped later.
        self.map.remove(key).map(|(_, v)| v)
    }

    /// Insert (or replace, which counts as newest), evicting the oldest
    /// entries while the map is full.
    pub fn insert(&mut self, key: K, value: V) {
        let generation = self.next;
        self.next += 1;
        if self.map.remove(&key).is_none() {
            while self.map.len() >= self.capacity {
                self.evict_oldest();
            }
        }
        self.map.insert(key.clone(), (generation, value));
        self.order.push_back((key, generation));
        if self.order.len() > 2 * self.capacity + 16 {
            let map = &self.map;
            self.order
                .retain(|(k, g)| map.get(k).is_some_and(|(cur, _)| cur == g));
        }
    }

    fn evict_oldest(&mut self) {
        while let Some((key, generation)) = self.order.pop_front() {
            if self.map.get(&key).is_some_and(|(g, _)| *g == generation) {
                self.map.remove(&key);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_oldest_and_stays_bounded() {
        let mut m = BoundedMap::new(3);
        for i in 0..3 {
            m.insert(i, i);
        }
        // Re-inserting 0 makes it the newest; 1 is now the oldest.
        m.insert(0, 10);
        m.insert(3, 3);
        assert_eq!(m.len(), 3);
        assert_eq!(m.get(&1), None);
        assert_eq!(m.get(&0), Some(&10));
        assert_eq!(m.get(&2), Some(&2));
        for i in 0..10_000 {
            m.insert(i % 7, i);
        }
        assert_eq!(m.len(), 3);
        assert!(m.order.len() <= 2 * 3 + 16 + 1);
        m.remove(&6);
        assert!(m.len() <= 3);
    }
}
