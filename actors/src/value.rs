//! Operations are data: SQL text plus typed parameters, or an atomic list of
//! them. Being plain serde values, the same operation can be executed, sent
//! over HTTP, logged, persisted and replayed.

use std::fmt;

use base64::Engine as _;
use rusqlite::types::{ToSqlOutput, ValueRef};
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One SQLite value: the five storage classes.
///
/// In JSON a value is `null`, an integer, a real, a string, or
/// `{"base64": "..."}` for a blob. Booleans, arrays and other objects are
/// rejected with a message saying what to send instead.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// A 64-bit signed integer.
    Integer(i64),
    /// A 64-bit float.
    Real(f64),
    /// UTF-8 text.
    Text(String),
    /// Raw bytes.
    Blob(Vec<u8>),
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Integer(v)
    }
}
/// Saturates at `i64::MAX`: SQLite integers are signed 64-bit.
impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Value::Integer(i64::try_from(v).unwrap_or(i64::MAX))
    }
}
impl From<i32> for Value {
    fn from(v: i32) -> Self {
        Value::Integer(v.into())
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Real(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_owned())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}
impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Value::Blob(v)
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

impl Value {
    /// The bytes this value holds (8 for a number, 0 for NULL): what
    /// response-size bounds count.
    pub fn size(&self) -> usize {
        match self {
            Value::Null => 0,
            Value::Integer(_) | Value::Real(_) => 8,
            Value::Text(t) => t.len(),
            Value::Blob(b) => b.len(),
        }
    }
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::Integer(i) => ValueRef::Integer(*i),
            Value::Real(r) => ValueRef::Real(*r),
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

impl From<ValueRef<'_>> for Value {
    fn from(v: ValueRef<'_>) -> Self {
        match v {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(i) => Value::Integer(i),
            ValueRef::Real(r) => Value::Real(r),
            ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
            ValueRef::Blob(b) => Value::Blob(b.to_vec()),
        }
    }
}

const BLOB_KEY: &str = "base64";

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => s.serialize_unit(),
            Value::Integer(i) => s.serialize_i64(*i),
            Value::Real(r) => s.serialize_f64(*r),
            Value::Text(t) => s.serialize_str(t),
            Value::Blob(b) => {
                let mut map = s.serialize_map(Some(1))?;
                map.serialize_entry(
                    BLOB_KEY,
                    &base64::engine::general_purpose::STANDARD.encode(b),
                )?;
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("null, an integer, a real, a string, or {\"base64\": \"...\"} for a blob")
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Integer(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        i64::try_from(v).map(Value::Integer).map_err(|_| {
            E::custom(format!(
                "integer {v} does not fit SQLite's 64-bit signed INTEGER; send it as text or a real"
            ))
        })
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Real(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Text(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::Text(v))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<Value, E> {
        Ok(Value::Blob(v.to_vec()))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Err(E::custom(format!(
            "boolean {v} is not an SQLite value; send 1 or 0"
        )))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Value, A::Error> {
        Err(de::Error::custom(
            "an array is not an SQLite value; send one parameter per placeholder",
        ))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let blob_error = || {
            de::Error::custom("an object parameter must be exactly {\"base64\": \"...\"} (a blob)")
        };
        let Some(key) = map.next_key::<String>()? else {
            return Err(blob_error());
        };
        if key != BLOB_KEY {
            return Err(blob_error());
        }
        let encoded: String = map.next_value()?;
        if map.next_key::<String>()?.is_some() {
            return Err(blob_error());
        }
        base64::engine::general_purpose::STANDARD
            .decode(encoded.as_bytes())
            .map(Value::Blob)
            .map_err(|e| de::Error::custom(format!("blob is not valid base64: {e}")))
    }
}

/// One SQL statement with its positional parameters (`?`, `?1`, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Statement {
    /// The SQL text: exactly one statement.
    pub sql: String,
    /// Positional parameters.
    #[serde(default)]
    pub params: Vec<Value>,
}

impl Statement {
    /// A statement with parameters.
    pub fn new(sql: impl Into<String>, params: impl IntoIterator<Item = Value>) -> Self {
        Statement {
            sql: sql.into(),
            params: params.into_iter().collect(),
        }
    }

    /// A statement without parameters.
    pub fn sql(sql: impl Into<String>) -> Self {
        Statement::new(sql, [])
    }
}

/// What the writer applies: one statement, or a list applied all or nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// A single statement.
    Statement(Statement),
    /// Several statements, committed together or not at all.
    Batch(Vec<Statement>),
    /// `op`, applied at most once per `key`: the key is committed in the
    /// same transaction (table `_resilite_idempotency` of the database), and
    /// a replay whose key is there is skipped with an empty outcome. A
    /// running runtime forgets keys after `retry.key_retention` (7 days).
    Once {
        /// The idempotency key.
        key: String,
        /// The operation.
        op: Box<Operation>,
    },
}

/// The effect of one committed statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteOutcome {
    /// Rows inserted, updated or deleted by the statement (0 for DDL).
    pub rows_affected: usize,
    /// The rowid of the last row an INSERT inserted (SQLite's
    /// `last_insert_rowid()` after the statement); 0 when the statement
    /// changed no row.
    pub last_insert_rowid: i64,
}

/// The committed effect of an operation: one outcome per statement.
pub type OperationOutcome = Vec<WriteOutcome>;

/// The result of a query: column names and rows of values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct QueryResult {
    /// Column names, in order.
    pub columns: Vec<String>,
    /// Rows, each with one value per column.
    pub rows: Vec<Vec<Value>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_json_round_trips_every_storage_class() {
        let values = vec![
            Value::Null,
            Value::Integer(-7),
            Value::Real(2.0),
            Value::Text("hé".into()),
            Value::Blob(vec![0, 255, 3]),
        ];
        let json = serde_json::to_string(&values).unwrap();
        assert_eq!(json, r#"[null,-7,2.0,"hé",{"base64":"AP8D"}]"#);
        let back: Vec<Value> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, values);
    }

    #[test]
    fn value_json_rejects_booleans_with_a_hint() {
        let err = serde_json::from_str::<Value>("true").unwrap_err();
        assert!(err.to_string().contains("send 1 or 0"), "{err}");
        let err = serde_json::from_str::<Value>(r#"{"x": 1}"#).unwrap_err();
        assert!(err.to_string().contains("base64"), "{err}");
        let err = serde_json::from_str::<Value>("18446744073709551615").unwrap_err();
        assert!(err.to_string().contains("64-bit"), "{err}");
    }
}
