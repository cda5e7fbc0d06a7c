//! AMQP properties and header tables as JSON, as the dead-letter store and the outbox
//! keep them (docs/operations.md, the dead-letter store).
//!
//! Headers keep their types, so a replayed message gets exactly the headers it had: a
//! UTF-8 string is a JSON string (most headers, and then the stored form reads like
//! `dlq list --json`), any other value a one-key object naming its type (`{"i64": 4}`,
//! `{"table": {...}}`, `{"bytes": "<base64>"}`). Properties are the texts `dlq list
//! --json` shows, read back the same way. Postgres' `jsonb` refuses NUL characters, so
//! a string holding one is stored as bytes.

use base64::prelude::{BASE64_STANDARD, Engine as _};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, DecimalValue, FieldArray, FieldTable, LongString, ShortString};
use serde_json::{Map, Value, json};

/// The header table as typed JSON (an empty object without headers).
pub fn headers_to_json(table: Option<&FieldTable>) -> Value {
    Value::Object(table.map(table_to_json).unwrap_or_default())
}

/// The header table back from [`headers_to_json`]; a value it cannot read is left out.
pub fn headers_from_json(json: &Value) -> FieldTable {
    let mut table = FieldTable::default();
    if let Value::Object(map) = json {
        for (name, value) in map {
            if let (Ok(name), Some(value)) = (ShortString::try_new(name.as_str()), decode(value)) {
                table.insert(name, value);
            }
        }
    }
    table
}

fn table_to_json(table: &FieldTable) -> Map<String, Value> {
    table
        .inner()
        .iter()
        .map(|(name, value)| (without_nul(name.as_str()), encode(value)))
        .collect()
}

fn encode(value: &AMQPValue) -> Value {
    let tagged = |tag: &str, inner: Value| json!({ tag: inner });
    match value {
        AMQPValue::LongString(s) => match std::str::from_utf8(s.as_bytes()) {
            Ok(text) if !text.contains('\0') => Value::String(text.to_owned()),
            _ => tagged("bytes", BASE64_STANDARD.encode(s.as_bytes()).into()),
        },
        AMQPValue::ShortString(s) => tagged("short", without_nul(s.as_str()).into()),
        AMQPValue::Boolean(v) => tagged("bool", json!(v)),
        AMQPValue::ShortShortInt(v) => tagged("i8", json!(v)),
        AMQPValue::ShortShortUInt(v) => tagged("u8", json!(v)),
        AMQPValue::ShortInt(v) => tagged("i16", json!(v)),
        AMQPValue::ShortUInt(v) => tagged("u16", json!(v)),
        AMQPValue::LongInt(v) => tagged("i32", json!(v)),
        AMQPValue::LongUInt(v) => tagged("u32", json!(v)),
        AMQPValue::LongLongInt(v) => tagged("i64", json!(v)),
        AMQPValue::Float(v) => tagged("f32", float(f64::from(*v))),
        AMQPValue::Double(v) => tagged("f64", float(*v)),
        AMQPValue::DecimalValue(d) => {
            tagged("decimal", json!({"scale": d.scale, "value": d.value}))
        }
        AMQPValue::FieldArray(items) => tagged(
            "array",
            Value::Array(items.as_slice().iter().map(encode).collect()),
        ),
        AMQPValue::Timestamp(t) => tagged("timestamp", json!(t)),
        AMQPValue::FieldTable(t) => tagged("table", Value::Object(table_to_json(t))),
        AMQPValue::ByteArray(b) => {
            tagged("byte_array", BASE64_STANDARD.encode(b.as_slice()).into())
        }
        AMQPValue::Void => tagged("void", Value::Null),
    }
}

/// A float as JSON: a number when finite, else its name (`NaN`, `inf`, `-inf`).
fn float(v: f64) -> Value {
    serde_json::Number::from_f64(v).map_or_else(|| Value::String(v.to_string()), Value::Number)
}

fn float_of(v: &Value) -> Option<f64> {
    v.as_f64().or_else(|| v.as_str()?.parse().ok())
}

fn decode(json: &Value) -> Option<AMQPValue> {
    if let Value::String(text) = json {
        return Some(AMQPValue::LongString(LongString::from(text.as_str())));
    }
    let (tag, v) = json.as_object()?.iter().next()?;
    let int = || v.as_i64();
    Some(match tag.as_str() {
        "bytes" => AMQPValue::LongString(BASE64_STANDARD.decode(v.as_str()?).ok()?.into()),
        "short" => AMQPValue::ShortString(ShortString::try_new(v.as_str()?).ok()?),
        "bool" => AMQPValue::Boolean(v.as_bool()?),
        "i8" => AMQPValue::ShortShortInt(int()?.try_into().ok()?),
        "u8" => AMQPValue::ShortShortUInt(int()?.try_into().ok()?),
        "i16" => AMQPValue::ShortInt(int()?.try_into().ok()?),
        "u16" => AMQPValue::ShortUInt(int()?.try_into().ok()?),
        "i32" => AMQPValue::LongInt(int()?.try_into().ok()?),
        "u32" => AMQPValue::LongUInt(int()?.try_into().ok()?),
        "i64" => AMQPValue::LongLongInt(int()?),
        "f32" => AMQPValue::Float(float_of(v)? as f32),
        "f64" => AMQPValue::Double(float_of(v)?),
        "decimal" => AMQPValue::DecimalValue(DecimalValue {
            scale: v["scale"].as_u64()?.try_into().ok()?,
            value: v["value"].as_u64()?.try_into().ok()?,
        }),
        "array" => AMQPValue::FieldArray(FieldArray::from(
            v.as_array()?.iter().filter_map(decode).collect::<Vec<_>>(),
        )),
        "timestamp" => AMQPValue::Timestamp(v.as_u64()?),
        "table" => AMQPValue::FieldTable(headers_from_json(v)),
        "byte_array" => AMQPValue::ByteArray(BASE64_STANDARD.decode(v.as_str()?).ok()?.into()),
        "void" => AMQPValue::Void,
        _ => return None,
    })
}

/// A stored header value (typed JSON) as people read it: strings as they are, numbers
/// and booleans as JSON text, tables and arrays as JSON of their readable values.
pub fn header_text(json: &Value) -> String {
    match readable(json) {
        Value::String(text) => text,
        other => other.to_string(),
    }
}

fn readable(json: &Value) -> Value {
    let Some((tag, v)) = json.as_object().and_then(|map| map.iter().next()) else {
        return json.clone();
    };
    match tag.as_str() {
        "bytes" => {
            let bytes = BASE64_STANDARD
                .decode(v.as_str().unwrap_or_default())
                .unwrap_or_default();
            Value::String(String::from_utf8_lossy(&bytes).into_owned())
        }
        "decimal" => {
            let scale = v["scale"].as_i64().unwrap_or(0);
            let value = v["value"].as_f64().unwrap_or(0.0);
            json!(value / 10f64.powi(i32::try_from(scale).unwrap_or(0)))
        }
        "array" => Value::Array(v.as_array().into_iter().flatten().map(readable).collect()),
        "table" => Value::Object(
            v.as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), readable(v)))
                .collect(),
        ),
        _ => v.clone(),
    }
}

/// The properties that are set, other than headers, as texts by name.
pub fn properties_to_json(p: &BasicProperties) -> Value {
    let text = |v: &Option<ShortString>| v.as_ref().map(|s| without_nul(s.as_str()));
    let timestamp = p.timestamp().map(|t| {
        match i64::try_from(t)
            .ok()
            .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
        {
            Some(at) => at.to_rfc3339(),
            None => t.to_string(),
        }
    });
    let pairs = [
        ("content_type", text(p.content_type())),
        ("content_encoding", text(p.content_encoding())),
        ("delivery_mode", p.delivery_mode().map(|m| m.to_string())),
        ("priority", p.priority().map(|m| m.to_string())),
        ("correlation_id", text(p.correlation_id())),
        ("reply_to", text(p.reply_to())),
        ("expiration", text(p.expiration())),
        ("message_id", text(p.message_id())),
        ("timestamp", timestamp),
        ("type", text(p.kind())),
        ("user_id", text(p.user_id())),
        ("app_id", text(p.app_id())),
        ("cluster_id", text(p.cluster_id())),
    ];
    Value::Object(
        pairs
            .into_iter()
            .filter_map(|(name, value)| Some((name.to_owned(), Value::String(value?))))
            .collect(),
    )
}

/// Properties back from [`properties_to_json`], with `headers`. `user_id` and
/// `expiration` are left out: the broker refuses a publish whose `user_id` is not the
/// publisher's, and a dead letter's expiration was the retry plumbing's, not the
/// message's own.
pub fn properties_from_json(json: &Value, headers: FieldTable) -> BasicProperties {
    let text = |name: &str| json.get(name)?.as_str();
    let short = |name: &str| ShortString::try_new(text(name)?).ok();
    let mut out = BasicProperties::default().with_headers(headers);
    macro_rules! copy {
        ($name:literal, $set:ident) => {
            if let Some(value) = short($name) {
                out = out.$set(value);
            }
        };
    }
    copy!("content_type", with_content_type);
    copy!("content_encoding", with_content_encoding);
    copy!("correlation_id", with_correlation_id);
    copy!("reply_to", with_reply_to);
    copy!("message_id", with_message_id);
    copy!("type", with_type);
    copy!("app_id", with_app_id);
    copy!("cluster_id", with_cluster_id);
    if let Some(mode) = text("delivery_mode").and_then(|m| m.parse().ok()) {
        out = out.with_delivery_mode(mode);
    }
    if let Some(priority) = text("priority").and_then(|p| p.parse().ok()) {
        out = out.with_priority(priority);
    }
    if let Some(at) = text("timestamp") {
        let seconds = chrono::DateTime::parse_from_rfc3339(at)
            .ok()
            .and_then(|t| u64::try_from(t.timestamp()).ok())
            .or_else(|| at.parse().ok());
        if let Some(seconds) = seconds {
            out = out.with_timestamp(seconds);
        }
    }
    out
}

/// `text` without NUL characters, which Postgres text and `jsonb` cannot hold.
pub fn without_nul(text: &str) -> String {
    text.replace('\0', "\u{fffd}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_header_type_comes_back_as_it_was() {
        let mut nested = FieldTable::default();
        nested.insert("count".into(), AMQPValue::LongLongInt(2));
        nested.insert("queue".into(), AMQPValue::LongString("q".into()));
        let values = [
            AMQPValue::LongString("text".into()),
            AMQPValue::LongString(b"\xff\x00raw".to_vec().into()),
            AMQPValue::ShortString("short".into()),
            AMQPValue::Boolean(true),
            AMQPValue::ShortShortInt(-3),
            AMQPValue::ShortShortUInt(3),
            AMQPValue::ShortInt(-300),
            AMQPValue::ShortUInt(300),
            AMQPValue::LongInt(-70_000),
            AMQPValue::LongUInt(70_000),
            AMQPValue::LongLongInt(1 << 40),
            AMQPValue::Float(1.5),
            AMQPValue::Double(f64::INFINITY),
            AMQPValue::DecimalValue(DecimalValue {
                scale: 2,
                value: 1234,
            }),
            AMQPValue::FieldArray(vec![AMQPValue::FieldTable(nested.clone())].into()),
            AMQPValue::Timestamp(1_764_000_000),
            AMQPValue::FieldTable(nested),
            AMQPValue::ByteArray(vec![0, 1, 2].into()),
            AMQPValue::Void,
        ];
        let mut table = FieldTable::default();
        for (i, value) in values.iter().enumerate() {
            table.insert(format!("h{i:02}").into(), value.clone());
        }
        let json = headers_to_json(Some(&table));
        let text = serde_json::to_string(&json).unwrap();
        assert!(!text.contains("\\u0000"), "{text}");
        assert_eq!(json["h00"], "text");
        assert_eq!(headers_from_json(&json), table);
        assert_eq!(header_text(&json["h10"]), (1i64 << 40).to_string());
        assert_eq!(header_text(&json["h16"]), r#"{"count":2,"queue":"q"}"#);
        assert_eq!(header_text(&json["h01"]), "\u{fffd}\u{0}raw");
    }

    #[test]
    fn properties_come_back_as_they_were_but_user_id_and_expiration() {
        let props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_priority(3)
            .with_message_id("m-1".into())
            .with_correlation_id("c-1".into())
            .with_timestamp(1_764_000_000)
            .with_type("t".into())
            .with_app_id("app".into())
            .with_user_id("guest".into())
            .with_expiration("1000".into());
        let json = properties_to_json(&props);
        assert_eq!(json["message_id"], "m-1");
        assert_eq!(json["user_id"], "guest");
        let back = properties_from_json(&json, FieldTable::default());
        let expected = props.clone().with_headers(FieldTable::default());
        assert_eq!(back.message_id(), expected.message_id());
        assert_eq!(back.timestamp(), expected.timestamp());
        assert_eq!(back.delivery_mode(), &Some(2));
        assert_eq!(back.priority(), &Some(3));
        assert_eq!(back.kind(), expected.kind());
        assert_eq!(back.user_id(), &None);
        assert_eq!(back.expiration(), &None);
    }
}
