//! What a statement's names stand for, for the rules that follow them
//! (see `session::relations`): the relations each name reaches (views'
//! tables, views over views, partitions and `INHERITS` relatives) and the
//! functions the views' definitions call, looked up and cached per
//! session.

use super::*;

impl Catalog {
    /// What each of `names` (table names as the SQL classifier gives them)
    /// reaches ([`Reach`]): the relations a view (or materialized view) of
    /// that name reads, through views over views, and the inheritance
    /// relatives (partitions, `INHERITS`) of every table met, as
    /// `schema.name`; and the functions those views' definitions call. A
    /// statement naming one reads or writes their rows, and reading a view
    /// runs its functions: the policy's table and function rules that deny
    /// or hold are matched against them too. A materialized view's functions
    /// count as well (they ran to fill it, and run again on `REFRESH`).
    /// Views of
    /// `pg_catalog` and `information_schema` are not followed (only a
    /// superuser with `allow_system_table_mods` can redefine them). `Err`
    /// when a name cannot be followed: a definition that does not parse,
    /// views nested deeper than [`MAX_VIEW_DEPTH`], more than
    /// [`MAX_RELATIVES`] relatives. A name that stands for tables only is
    /// looked up once per session; one that stands for a view (or a view
    /// it reads) is looked up again on every call, since any session can
    /// replace a view's definition.
    pub async fn related_names(
        &mut self,
        names: &[String],
    ) -> Result<HashMap<String, Reach>, CatalogError> {
        let mut wanted: Vec<RelName> = names.iter().map(|n| name_key(n)).collect();
        let mut seen: HashSet<RelName> = HashSet::new();
        let mut depth = 0;
        while !wanted.is_empty() && depth <= MAX_VIEW_DEPTH {
            wanted.retain(|k| seen.insert(k.clone()));
            // Any session can replace a view's definition at any time
            // (`CREATE OR REPLACE VIEW v AS SELECT pg_read_file(…)`): a
            // name that stood for a view is looked up again for every
            // statement. A name of tables only is kept for the session.
            for key in &wanted {
                if self.stands_for_views(key) || self.absent.contains(key) {
                    self.revised();
                    self.names.remove(key);
                    self.user_code.remove(key);
                    self.relatives.remove(key);
                }
            }
            self.lookup(&wanted).await?;
            wanted = wanted
                .iter()
                .flat_map(|k| self.names.get(k))
                .flatten()
                .filter_map(|id| self.views.get(id))
                .filter(|v| !is_system_schema(&v.schema))
                .filter_map(|v| v.definition.as_ref())
                .flat_map(|(_, reads)| reads.iter().cloned())
                .filter(|k| !seen.contains(k))
                .collect();
            depth += 1;
        }
        self.related_cached(names).unwrap_or_else(|| {
            Err(CatalogError::Unknowable(format!(
                "{} stand for: views are nested too deep",
                names.join(", ")
            )))
        })
    }

    /// Whether the cached lookup of `key` found a view (or materialized
    /// view) outside the system schemas.
    fn stands_for_views(&self, key: &RelName) -> bool {
        self.names.get(key).is_some_and(|ids| {
            ids.iter().any(|id| {
                self.views
                    .get(id)
                    .is_none_or(|v| !is_system_schema(&v.schema))
            })
        })
    }

    /// Whether each of `names` (as the SQL classifier gives them) was
    /// looked up in this session and stands for no view outside the system
    /// schemas: under function rules alone (no table rules) such names
    /// reach no function, and nothing need be looked up or matched.
    pub fn names_without_views(&self, names: &[String]) -> bool {
        names.iter().all(|n| {
            let key = name_key(n);
            self.names.contains_key(&key)
                && !self.absent.contains(&key)
                && !self.stands_for_views(&key)
        })
    }

    /// [`Catalog::related_names`] from what this session looked up already,
    /// without a lookup: `None` when a name (or a view's) is not in the
    /// cache.
    pub fn related_cached(
        &self,
        names: &[String],
    ) -> Option<Result<HashMap<String, Reach>, CatalogError>> {
        let mut out = HashMap::new();
        for name in names {
            let mut found = Reach::default();
            match self.reach(&name_key(name), 0, &mut found) {
                Ok(()) => {}
                Err(None) => return None,
                Err(Some(why)) => {
                    return Some(Err(CatalogError::Unknowable(format!(
                        "{name} stands for: {why}"
                    ))));
                }
            }
            found.relations.sort();
            found.relations.dedup();
            found.functions.sort();
            found.functions.dedup();
            out.insert(name.clone(), found);
        }
        Some(Ok(out))
    }

    /// Adds what `key` reaches to `found` (see [`Catalog::related_names`]);
    /// `Err(None)` when a name was not looked up, `Err(Some(why))` when it
    /// cannot be followed.
    fn reach(&self, key: &RelName, depth: usize, found: &mut Reach) -> Result<(), Option<String>> {
        let (Some(views), Some(relatives)) = (self.names.get(key), self.relatives.get(key)) else {
            return Err(None);
        };
        for r in relatives {
            let Some((schema, name)) = &r.relative else {
                return Err(Some(format!(
                    "it has more than {MAX_RELATIVES} partitions or children"
                )));
            };
            found.relations.push(format!("{schema}.{name}"));
        }
        for view in views.iter().filter_map(|id| self.views.get(id)) {
            if is_system_schema(&view.schema) {
                continue;
            }
            let Some((statement, reads)) = &view.definition else {
                return Err(Some(format!(
                    "view {}.{} reads (its definition does not parse)",
                    view.schema, view.name
                )));
            };
            if depth >= MAX_VIEW_DEPTH {
                return Err(Some("its views are nested too deep".to_string()));
            }
            let id = format!("{}.{}", view.schema, view.name);
            found
                .functions
                .extend(statement.functions.iter().map(|f| (id.clone(), f.clone())));
            for read in reads {
                found.relations.push(if read.0.is_empty() {
                    read.1.clone()
                } else {
                    format!("{}.{}", read.0, read.1)
                });
                self.reach(read, depth + 1, found)?;
            }
        }
        Ok(())
    }
}
