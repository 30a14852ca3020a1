//! Portals by name, with the unnamed portal in a slot of its own.
//!
//! Nearly every Bind and Execute of every driver (libpq's `PQexecPrepared`,
//! JDBC, pgbench `-M prepared`, asyncpg, psycopg) uses the unnamed portal
//! `""`. Both loops look a portal up for each statement (the client loop at
//! Bind and Execute, the server loop at BindComplete and for every DataRow):
//! the unnamed one is then a field, with no hashing, no key allocated and
//! no map insertion per statement (#22: the per-statement path). Named
//! portals (`DECLARE`-free cursors of the protocol, JDBC's fetch size) go to
//! the map, as before. Behaves exactly as a map from name to value.

use super::Map;

pub(super) struct Portals<V> {
    unnamed: Option<V>,
    named: Map<String, V>,
}

impl<V> Default for Portals<V> {
    fn default() -> Self {
        Portals {
            unnamed: None,
            named: Map::default(),
        }
    }
}

impl<V> Portals<V> {
    pub(super) fn get(&self, name: &str) -> Option<&V> {
        if name.is_empty() {
            self.unnamed.as_ref()
        } else {
            self.named.get(name)
        }
    }

    pub(super) fn get_mut(&mut self, name: &str) -> Option<&mut V> {
        if name.is_empty() {
            self.unnamed.as_mut()
        } else {
            self.named.get_mut(name)
        }
    }

    /// Binds `name` to `value`, replacing what it was bound to.
    pub(super) fn insert(&mut self, name: String, value: V) {
        if name.is_empty() {
            self.unnamed = Some(value);
        } else {
            self.named.insert(name, value);
        }
    }

    pub(super) fn remove(&mut self, name: &str) {
        if name.is_empty() {
            self.unnamed = None;
        } else {
            self.named.remove(name);
        }
    }

    pub(super) fn clear(&mut self) {
        self.unnamed = None;
        self.named.clear();
    }

    /// The names bound (the unnamed portal as `""`).
    pub(super) fn names(&self) -> Vec<String> {
        let unnamed = self.unnamed.as_ref().map(|_| String::new());
        unnamed
            .into_iter()
            .chain(self.named.keys().cloned())
            .collect()
    }

    #[cfg(test)]
    pub(super) fn values(&self) -> impl Iterator<Item = &V> {
        self.unnamed.iter().chain(self.named.values())
    }

    pub(super) fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.unnamed.iter_mut().chain(self.named.values_mut())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The unnamed portal and named ones behave as one map: bound, bound
    /// again, closed, cleared, iterated.
    #[test]
    fn portals_behave_as_one_map() {
        let mut p: Portals<u32> = Portals::default();
        assert_eq!(p.get(""), None);
        p.insert(String::new(), 1);
        p.insert("c1".into(), 2);
        assert_eq!(
            (p.get(""), p.get("c1"), p.get("c2")),
            (Some(&1), Some(&2), None)
        );
        p.insert(String::new(), 3);
        if let Some(v) = p.get_mut("") {
            *v += 10;
        }
        if let Some(v) = p.get_mut("c1") {
            *v += 10;
        }
        assert_eq!((p.get(""), p.get("c1")), (Some(&13), Some(&12)));
        let mut all: Vec<u32> = p.values().copied().collect();
        all.sort();
        assert_eq!(all, vec![12, 13]);
        for v in p.values_mut() {
            *v = 0;
        }
        assert_eq!(p.values().sum::<u32>(), 0);
        p.remove("");
        assert_eq!((p.get(""), p.get("c1")), (None, Some(&0)));
        p.insert(String::new(), 5);
        p.remove("c1");
        assert_eq!((p.get(""), p.get("c1")), (Some(&5), None));
        p.clear();
        assert_eq!((p.get(""), p.values().count()), (None, 0));
    }
}
