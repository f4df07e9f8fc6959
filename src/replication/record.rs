//! A log record: one committed transaction (or one DDL statement) as re-executable
//! statements, each with the session context that makes a follower's re-execution give the
//! primary's result (schema, replayable settings, timestamp, insert id, last insert id,
//! random seeds) and the primary's affected-row count to compare against.
//!
//! Encoding is a small versioned binary format (the WAL and `myquorum.wal` hold it).
//! Pure: no I/O. Owns: `Record`, `Statement`. May import: std, sql::classify (what a
//! statement's text runs).

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// A COM_QUERY text, byte for byte as the client sent it (it may hold latin1 or binary
    /// literals that are not UTF-8).
    Text(Vec<u8>),
    /// A prepared statement: its text and the COM_STMT_EXECUTE body after the statement id
    /// (flags, iteration count, null bitmap, new-params-bound = 1, types, values), replayed
    /// byte for byte.
    Prepared { sql: String, params: Vec<u8> },
    /// `LOAD DATA LOCAL INFILE` text and the file the client sent, replayed by answering the
    /// replica's file request with these bytes.
    LoadData { sql: String, data: Vec<u8> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub schema: Option<String>,
    /// Character set/collation id of the client's connection.
    pub collation: u8,
    /// Replayable SET fragments that matter for re-execution (`SESSION sql_mode = '…'`, …).
    pub settings: Vec<String>,
    /// `SET timestamp` in microseconds since the epoch; 0 when the statement reads no clock
    /// (`sql::clock`, `backend::schema_facts`): replicas are sent none.
    pub timestamp_us: u64,
    /// First auto-increment value the primary generated (0: none).
    pub insert_id: u64,
    /// The connection's LAST_INSERT_ID() before the statement, when it reads it.
    pub last_insert_id: Option<u64>,
    pub rand_seeds: Option<(u32, u32)>,
    /// Affected rows on the primary; `None` when not comparable.
    pub affected: Option<u64>,
    pub body: Body,
}

impl Statement {
    /// Runs a stored program (`sql::classify::runs_a_program`), which may end the
    /// transaction it runs in.
    pub fn runs_a_program(&self) -> bool {
        match &self.body {
            Body::Text(t) => crate::sql::classify::runs_a_program(&String::from_utf8_lossy(t)),
            Body::Prepared { sql, .. } => crate::sql::classify::runs_a_program(sql),
            Body::LoadData { .. } => false,
        }
    }

    /// About the bytes it takes in a record (its body, settings and schema; the fixed fields
    /// counted roughly): what bounds a transaction's record before it is encoded.
    pub fn record_bytes(&self) -> usize {
        let body = match &self.body {
            Body::Text(t) => t.len(),
            Body::Prepared { sql, params } => sql.len() + params.len(),
            Body::LoadData { sql, data } => sql.len() + data.len(),
        };
        64 + body
            + self.schema.as_ref().map_or(0, String::len)
            + self.settings.iter().map(|s| s.len() + 4).sum::<usize>()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordKind {
    Transaction,
    Ddl,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub kind: RecordKind,
    pub statements: Vec<Statement>,
}

const VERSION: u8 = 1;

struct W(Vec<u8>);
impl W {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.u32(b.len() as u32);
        self.0.extend_from_slice(b);
    }
    fn opt_u64(&mut self, v: Option<u64>) {
        match v {
            Some(v) => {
                self.u8(1);
                self.u64(v)
            }
            None => self.u8(0),
        }
    }
}

struct R<'a>(&'a [u8]);
impl<'a> R<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Option<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Some(u64::from_le_bytes(a))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn string(&mut self) -> Option<String> {
        String::from_utf8(self.bytes()?.to_vec()).ok()
    }
    fn opt_u64(&mut self) -> Option<Option<u64>> {
        match self.u8()? {
            0 => Some(None),
            1 => Some(Some(self.u64()?)),
            _ => None,
        }
    }
}

impl Record {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = W(Vec::with_capacity(128));
        w.u8(VERSION);
        w.u8(match self.kind {
            RecordKind::Transaction => 0,
            RecordKind::Ddl => 1,
        });
        w.u32(self.statements.len() as u32);
        for s in &self.statements {
            match &s.schema {
                Some(db) => {
                    w.u8(1);
                    w.bytes(db.as_bytes());
                }
                None => w.u8(0),
            }
            w.u8(s.collation);
            w.u32(s.settings.len() as u32);
            for f in &s.settings {
                w.bytes(f.as_bytes());
            }
            w.u64(s.timestamp_us);
            w.u64(s.insert_id);
            w.opt_u64(s.last_insert_id);
            w.opt_u64(
                s.rand_seeds
                    .map(|(a, b)| (u64::from(a) << 32) | u64::from(b)),
            );
            w.opt_u64(s.affected);
            match &s.body {
                Body::Text(sql) => {
                    w.u8(0);
                    w.bytes(sql);
                }
                Body::Prepared { sql, params } => {
                    w.u8(1);
                    w.bytes(sql.as_bytes());
                    w.bytes(params);
                }
                Body::LoadData { sql, data } => {
                    w.u8(2);
                    w.bytes(sql.as_bytes());
                    w.bytes(data);
                }
            }
        }
        w.0
    }

    /// Whether an encoded record is a DDL statement, without decoding it.
    pub fn is_ddl(data: &[u8]) -> bool {
        data.first() == Some(&VERSION) && data.get(1) == Some(&1)
    }

    pub fn decode(data: &[u8]) -> Option<Record> {
        let mut r = R(data);
        if r.u8()? != VERSION {
            return None;
        }
        let kind = match r.u8()? {
            0 => RecordKind::Transaction,
            1 => RecordKind::Ddl,
            _ => return None,
        };
        let n = r.u32()? as usize;
        let mut statements = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            let schema = match r.u8()? {
                0 => None,
                1 => Some(r.string()?),
                _ => return None,
            };
            let collation = r.u8()?;
            let nset = r.u32()? as usize;
            let mut settings = Vec::with_capacity(nset.min(64));
            for _ in 0..nset {
                settings.push(r.string()?);
            }
            let timestamp_us = r.u64()?;
            let insert_id = r.u64()?;
            let last_insert_id = r.opt_u64()?;
            let rand_seeds = r
                .opt_u64()?
                .map(|v| ((v >> 32) as u32, (v & 0xFFFF_FFFF) as u32));
            let affected = r.opt_u64()?;
            let body = match r.u8()? {
                0 => Body::Text(r.bytes()?.to_vec()),
                1 => Body::Prepared {
                    sql: r.string()?,
                    params: r.bytes()?.to_vec(),
                },
                2 => Body::LoadData {
                    sql: r.string()?,
                    data: r.bytes()?.to_vec(),
                },
                _ => return None,
            };
            statements.push(Statement {
                schema,
                collation,
                settings,
                timestamp_us,
                insert_id,
                last_insert_id,
                rand_seeds,
                affected,
                body,
            });
        }
        if !r.0.is_empty() {
            return None;
        }
        Some(Record { kind, statements })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let rec = Record {
            kind: RecordKind::Transaction,
            statements: vec![
                Statement {
                    schema: Some("shop".into()),
                    collation: 45,
                    settings: vec!["SESSION sql_mode = 'ANSI'".into()],
                    timestamp_us: 1_700_000_000_123_456,
                    insert_id: 42,
                    last_insert_id: Some(41),
                    rand_seeds: Some((7, u32::MAX)),
                    affected: Some(3),
                    body: Body::Text(b"INSERT INTO t VALUES ('caf\xe9', NOW())".to_vec()),
                },
                Statement {
                    schema: None,
                    collation: 8,
                    settings: vec![],
                    timestamp_us: 1,
                    insert_id: 0,
                    last_insert_id: None,
                    rand_seeds: None,
                    affected: None,
                    body: Body::Prepared {
                        sql: "UPDATE t SET a = ? WHERE id = ?".into(),
                        params: vec![0, 1, 0, 0, 0, 0, 1, 3, 0, 3, 0, 5, 0, 0, 0, 9, 0, 0, 0],
                    },
                },
                Statement {
                    schema: Some("shop".into()),
                    collation: 45,
                    settings: vec![],
                    timestamp_us: 2,
                    insert_id: 100,
                    last_insert_id: None,
                    rand_seeds: None,
                    affected: Some(2),
                    body: Body::LoadData {
                        sql: "LOAD DATA LOCAL INFILE 'x.csv' INTO TABLE t".into(),
                        data: b"1,a\n2,b\n".to_vec(),
                    },
                },
            ],
        };
        let bytes = rec.encode();
        assert_eq!(Record::decode(&bytes), Some(rec.clone()));
        // Truncated or trailing bytes are rejected, not misread.
        assert_eq!(Record::decode(&bytes[..bytes.len() - 1]), None);
        let mut extra = bytes.clone();
        extra.push(0);
        assert_eq!(Record::decode(&extra), None);
        assert!(!Record::is_ddl(&bytes));
        let ddl = Record {
            kind: RecordKind::Ddl,
            statements: rec.statements[..1].to_vec(),
        };
        assert!(Record::is_ddl(&ddl.encode()));
    }
}
