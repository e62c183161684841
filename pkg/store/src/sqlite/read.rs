//! Schema and read-side SQL (used by reader connections and by the writer).

use rusqlite::types::{ToSql, ToSqlOutput, ValueRef};
use rusqlite::{Connection, OptionalExtension, params};

use crate::{Error, Event, EventKind, KeyValue, ListResult, Result};

/// The whole schema. `id` is the revision of the write that produced the row.
pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS kv (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    created INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    create_revision INTEGER NOT NULL,
    prev_revision INTEGER NOT NULL,
    value BLOB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS kv_name_prev ON kv(name, prev_revision);
CREATE UNIQUE INDEX IF NOT EXISTS kv_name_id ON kv(name, id);
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL);
";

/// Meta key holding the compacted revision.
pub(crate) const META_COMPACT: &str = "compact_rev";

/// Text bound as raw bytes (the exclusive upper bound of a prefix range need not be UTF-8).
pub(crate) struct TextBytes<'a>(pub &'a [u8]);

impl ToSql for TextBytes<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(ValueRef::Text(self.0)))
    }
}

/// Exclusive upper bound of all keys starting with `prefix` (byte order, as SQLite's BINARY
/// collation compares UTF-8 text). Valid UTF-8 never contains 0xFF, so bumping the last byte
/// (or using `[0xFF]` for the empty prefix) bounds every matching key.
pub(crate) fn prefix_upper(prefix: &str) -> Vec<u8> {
    let mut bytes = prefix.as_bytes().to_vec();
    match bytes.last_mut() {
        Some(last) if *last < 0xFF => *last += 1,
        _ => bytes.push(0xFF),
    }
    bytes
}

/// The latest row of one key: (id, deleted, create_revision, value).
pub(crate) struct Latest {
    pub id: i64,
    pub deleted: bool,
    pub create_revision: i64,
    pub value: Vec<u8>,
}

impl Latest {
    pub(crate) fn to_kv(&self, key: &str) -> KeyValue {
        KeyValue {
            key: key.to_string(),
            value: self.value.clone(),
            create_revision: self.create_revision,
            mod_revision: self.id,
        }
    }
}

pub(crate) fn latest(conn: &Connection, key: &str) -> Result<Option<Latest>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, deleted, create_revision, value FROM kv WHERE name = ?1 ORDER BY id DESC LIMIT 1",
    )?;
    let row = stmt
        .query_row(params![key], |r| {
            Ok(Latest {
                id: r.get(0)?,
                deleted: r.get::<_, i64>(1)? != 0,
                create_revision: r.get(2)?,
                value: r.get(3)?,
            })
        })
        .optional()?;
    Ok(row)
}

/// The persisted compacted revision (0 when never compacted).
pub(crate) fn compacted(conn: &Connection) -> Result<i64> {
    let v = conn
        .query_row(
            "SELECT v FROM meta WHERE k = ?1",
            params![META_COMPACT],
            |r| r.get::<_, i64>(0),
        )
        .optional()?;
    Ok(v.unwrap_or(0))
}

/// (current, compacted) as seen by `conn`'s snapshot. A compaction may have removed the newest
/// row (a tombstone), so the current revision is at least the compacted one.
pub(crate) fn revisions(conn: &Connection) -> Result<(i64, i64)> {
    let max_id: i64 = conn.query_row("SELECT COALESCE(MAX(id), 0) FROM kv", [], |r| r.get(0))?;
    let compacted = compacted(conn)?;
    Ok((max_id.max(compacted), compacted))
}

pub(crate) fn get(conn: &mut Connection, key: &str) -> Result<Option<KeyValue>> {
    Ok(latest(conn, key)?
        .filter(|l| !l.deleted)
        .map(|l| l.to_kv(key)))
}

pub(crate) fn count(conn: &mut Connection, prefix: &str) -> Result<i64> {
    let upper = prefix_upper(prefix);
    let n = conn.query_row(
        "SELECT COUNT(*) FROM kv k JOIN (
             SELECT MAX(id) AS mid FROM kv WHERE name >= ?1 AND name < ?2 GROUP BY name
         ) m ON k.id = m.mid WHERE k.deleted = 0",
        params![prefix, TextBytes(&upper)],
        |r| r.get(0),
    )?;
    Ok(n)
}

pub(crate) fn list(
    conn: &mut Connection,
    prefix: &str,
    start_after: Option<&str>,
    limit: Option<usize>,
    revision: Option<i64>,
) -> Result<ListResult> {
    let tx = conn.transaction()?;
    let (current, compacted) = revisions(&tx)?;
    let rev = match revision {
        Some(r) if r > 0 => {
            if r < compacted {
                return Err(Error::Compacted {
                    requested: r,
                    compacted,
                });
            }
            if r > current {
                return Err(Error::FutureRevision {
                    requested: r,
                    current,
                });
            }
            r
        }
        _ => current,
    };
    let upper = prefix_upper(prefix);
    let after = start_after.unwrap_or("");
    let limit = limit.filter(|l| *l > 0);
    // Fetch one extra row to learn whether more follow.
    let sql_limit = limit
        .map(|l| i64::try_from(l).unwrap_or(i64::MAX - 1) + 1)
        .unwrap_or(-1);
    let mut items = {
        let mut stmt = tx.prepare_cached(
            "SELECT k.id, k.name, k.create_revision, k.value FROM kv k JOIN (
                 SELECT MAX(id) AS mid FROM kv
                 WHERE name >= ?1 AND name < ?2 AND name > ?3 AND id <= ?4 GROUP BY name
             ) m ON k.id = m.mid WHERE k.deleted = 0 ORDER BY k.name LIMIT ?5",
        )?;
        let rows = stmt.query_map(
            params![prefix, TextBytes(&upper), after, rev, sql_limit],
            |r| {
                Ok(KeyValue {
                    mod_revision: r.get(0)?,
                    key: r.get(1)?,
                    create_revision: r.get(2)?,
                    value: r.get(3)?,
                })
            },
        )?;
        rows.collect::<rusqlite::Result<Vec<_>>>()?
    };
    let mut more = false;
    let mut remaining = 0;
    if let Some(l) = limit
        && items.len() > l
    {
        items.truncate(l);
        more = true;
        let last = items.last().map(|kv| kv.key.as_str()).unwrap_or(after);
        remaining = tx.query_row(
            "SELECT COUNT(*) FROM kv k JOIN (
                 SELECT MAX(id) AS mid FROM kv
                 WHERE name >= ?1 AND name < ?2 AND name > ?3 AND id <= ?4 GROUP BY name
             ) m ON k.id = m.mid WHERE k.deleted = 0",
            params![prefix, TextBytes(&upper), last, rev],
            |r| r.get(0),
        )?;
    }
    Ok(ListResult {
        items,
        revision: rev,
        more,
        remaining,
    })
}

/// Every event with `after < revision <= until` for keys under `prefix`, in revision order.
/// Fails with [`Error::Compacted`] when `after` is older than the compacted revision.
pub(crate) fn history(
    conn: &mut Connection,
    prefix: &str,
    after: i64,
    until: i64,
) -> Result<Vec<Event>> {
    let tx = conn.transaction()?;
    let compacted = compacted(&tx)?;
    if after < compacted {
        return Err(Error::Compacted {
            requested: after,
            compacted,
        });
    }
    let upper = prefix_upper(prefix);
    let mut stmt = tx.prepare_cached(
        "SELECT r.id, r.name, r.created, r.deleted, r.create_revision, r.value,
                p.id, p.create_revision, p.value, p.deleted
         FROM kv r LEFT JOIN kv p ON p.id = r.prev_revision AND r.prev_revision > 0
         WHERE r.id > ?1 AND r.id <= ?2 AND r.name >= ?3 AND r.name < ?4
         ORDER BY r.id",
    )?;
    let rows = stmt.query_map(params![after, until, prefix, TextBytes(&upper)], |r| {
        let key: String = r.get(1)?;
        let created = r.get::<_, i64>(2)? != 0;
        let deleted = r.get::<_, i64>(3)? != 0;
        let kind = if deleted {
            EventKind::Delete
        } else if created {
            EventKind::Create
        } else {
            EventKind::Update
        };
        let prev_id: Option<i64> = r.get(6)?;
        let prev_deleted = r.get::<_, Option<i64>>(9)?.unwrap_or(0) != 0;
        let prev = match prev_id {
            Some(id) if kind != EventKind::Create && !prev_deleted => Some(KeyValue {
                key: key.clone(),
                value: r.get(8)?,
                create_revision: r.get(7)?,
                mod_revision: id,
            }),
            _ => None,
        };
        Ok(Event {
            kind,
            kv: KeyValue {
                key,
                value: r.get(5)?,
                create_revision: r.get(4)?,
                mod_revision: r.get(0)?,
            },
            prev,
        })
    })?;
    let events = rows.collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::prefix_upper;

    #[test]
    fn prefix_upper_bounds_every_key_with_the_prefix() {
        let upper = prefix_upper("/a/");
        for key in ["/a/", "/a/b", "/a/\u{10FFFF}\u{10FFFF}"] {
            assert!(key.as_bytes() < upper.as_slice(), "{key}");
        }
        assert!(b"/a0".as_slice() >= upper.as_slice());
        assert!(b"/b".as_slice() > upper.as_slice());
    }

    #[test]
    fn the_empty_prefix_bounds_all_text() {
        assert!("\u{10FFFF}".as_bytes() < prefix_upper("").as_slice());
    }
}
