//! A store's rows as they are, still sealed: what `credkeeper store migrate` carries from
//! one backend to another. Nothing here is ever opened, so a copy needs no key but the
//! one both stores already share.

/// Every table a store keeps, with the columns a copy carries (a row's own id is left to
/// the new store).
pub(crate) const TABLES: &[(&str, &[&str])] = &[
    (
        "credential",
        &[
            "issuer",
            "client_id",
            "identity",
            "key_id",
            "sealed",
            "scope",
            "updated_at",
            "access_key_id",
            "access_sealed",
            "access_expires",
            "access_issued",
            "access_scope",
            "needs_login",
            "failures",
            "next_attempt",
            "refresh_started",
            "refresh_until",
        ],
    ),
    ("robot_secret", &["robot", "phc", "updated_at"]),
    (
        "task_run",
        &[
            "task", "started", "ended", "status", "attempts", "reason", "key_id", "output",
        ],
    ),
    ("task_secret", &["name", "key_id", "sealed", "updated_at"]),
    ("task_claim", &["task", "due", "claimed_at"]),
    (
        "shared_state",
        &["kind", "id", "key_id", "sealed", "expires"],
    ),
];

/// One cell.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Text(String),
    Bytes(Vec<u8>),
}

/// Every row of every table of [`TABLES`], in its order.
#[derive(Clone, Debug, Default)]
pub struct Dump {
    pub(crate) rows: Vec<Vec<Vec<Value>>>,
}

impl Dump {
    /// Each table's name, columns and rows.
    pub(crate) fn tables(
        &self,
    ) -> impl Iterator<Item = (&'static str, &'static [&'static str], &[Vec<Value>])> {
        TABLES
            .iter()
            .zip(&self.rows)
            .map(|((table, columns), rows)| (*table, *columns, rows.as_slice()))
    }

    /// How many rows each table has.
    pub fn counts(&self) -> Vec<(&'static str, u64)> {
        self.tables()
            .map(|(table, _, rows)| (table, rows.len() as u64))
            .collect()
    }
}
