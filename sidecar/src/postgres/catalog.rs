//! Resolves result columns to their origin (schema, table, column) from the
//! table OID and attribute number in RowDescription.
//!
//! The lookup runs on a second upstream session the sidecar opens for itself
//! (lazily, only when column masking applies), never on the client's: a side
//! query there would change the client's transaction state, fail inside an
//! aborted transaction, and mix its results into the client's stream. The
//! price is that a table created inside the client's still-open transaction
//! is not visible yet: such columns resolve to "unknown" and are masked whole.
//! Results are cached for the session.

use std::collections::{HashMap, HashSet};

use super::upstream::{self, UpstreamConfig, UpstreamError, UpstreamSession};

/// Where a result column comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// Schema of the table.
    pub schema: String,
    /// Table name.
    pub table: String,
    /// Column name.
    pub column: String,
}

/// A table's name and its columns by attribute number.
#[derive(Debug, Clone, Default)]
struct TableInfo {
    schema: String,
    table: String,
    columns: HashMap<i16, String>,
}

/// A per-session cache of table OIDs.
pub struct Catalog {
    upstream: UpstreamConfig,
    session: Option<UpstreamSession>,
    tables: HashMap<u32, Option<TableInfo>>,
}

impl Catalog {
    /// A catalog that will connect with `upstream` when first needed.
    pub fn new(upstream: UpstreamConfig) -> Self {
        Catalog {
            upstream,
            session: None,
            tables: HashMap::new(),
        }
    }

    async fn session(&mut self) -> Result<&mut UpstreamSession, UpstreamError> {
        if self.session.is_none() {
            let params = vec![("application_name".to_string(), "sluice-catalog".to_string())];
            self.session = Some(upstream::connect(&self.upstream, &params).await?);
        }
        self.session.as_mut().ok_or(UpstreamError::Unexpected {
            tag: '?',
            phase: "catalog session",
        })
    }

    /// The origin of each (table OID, attnum); `None` where the column is an
    /// expression (OID 0) or the table cannot be seen.
    pub async fn resolve(
        &mut self,
        columns: &[(u32, i16)],
    ) -> Result<Vec<Option<Origin>>, UpstreamError> {
        let missing: HashSet<u32> = columns
            .iter()
            .map(|(oid, _)| *oid)
            .filter(|oid| *oid != 0 && !self.tables.contains_key(oid))
            .collect();
        if !missing.is_empty() {
            let list = missing
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",");
            // Only integers are interpolated: no quoting issue.
            let sql = format!(
                "SELECT c.oid, n.nspname, c.relname, a.attnum, a.attname \
                 FROM pg_catalog.pg_class c \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid \
                 WHERE c.oid IN ({list}) AND a.attnum > 0 AND NOT a.attisdropped"
            );
            let session = self.session().await?;
            let rows = upstream::simple_query(session, &sql).await?;
            for oid in &missing {
                self.tables.insert(*oid, None);
            }
            for row in rows {
                let [
                    Some(oid),
                    Some(schema),
                    Some(table),
                    Some(attnum),
                    Some(name),
                ] = <[Option<String>; 5]>::try_from(row).unwrap_or_default()
                else {
                    continue;
                };
                let (Ok(oid), Ok(attnum)) = (oid.parse::<u32>(), attnum.parse::<i16>()) else {
                    continue;
                };
                let info = self
                    .tables
                    .entry(oid)
                    .or_insert(None)
                    .get_or_insert_with(|| TableInfo {
                        schema: schema.clone(),
                        table: table.clone(),
                        columns: HashMap::new(),
                    });
                info.columns.insert(attnum, name);
            }
        }
        Ok(columns
            .iter()
            .map(|(oid, attnum)| {
                let info = self.tables.get(oid)?.as_ref()?;
                Some(Origin {
                    schema: info.schema.clone(),
                    table: info.table.clone(),
                    column: info.columns.get(attnum)?.clone(),
                })
            })
            .collect())
    }

    /// The columns of a table in order, looked up by name (for `COPY t TO STDOUT`).
    /// `None` when the table cannot be seen.
    pub async fn table_columns(
        &mut self,
        schema: Option<&str>,
        table: &str,
    ) -> Result<Option<Vec<String>>, UpstreamError> {
        let quote_ident = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
        let qualified = match schema {
            Some(s) => format!("{}.{}", quote_ident(s), quote_ident(table)),
            None => quote_ident(table),
        };
        let literal = format!("'{}'", qualified.replace('\'', "''"));
        let sql = format!(
            "SELECT a.attname FROM pg_catalog.pg_attribute a \
             WHERE a.attrelid = pg_catalog.to_regclass({literal}) AND a.attnum > 0 \
             AND NOT a.attisdropped ORDER BY a.attnum"
        );
        let session = self.session().await?;
        let rows = upstream::simple_query(session, &sql).await?;
        if rows.is_empty() {
            return Ok(None);
        }
        Ok(Some(
            rows.into_iter()
                .filter_map(|mut r| r.pop().flatten())
                .collect(),
        ))
    }
}
