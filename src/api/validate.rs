//! Validation of request values at the edge: each field kind checks (and
//! normalises) its JSON value, secrets are encrypted here, and free-form
//! JSON is bounded so whatever is stored can be read back.

use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::error::ApiError;
use super::resource::{Field, Kind};
use super::secrets;
use super::types::{parse_transfer_target, Cidr, CodecName, SipHost, E164};

/// Checks one value against its kind; returns the value to store.
pub fn check(field: &str, kind: Kind, v: &Value, key: &[u8; 32]) -> Result<Value, ApiError> {
    let bad = |reason: &str| ApiError::validation(field, reason);
    let text = || v.as_str().ok_or_else(|| bad("must be a string"));
    Ok(match kind {
        Kind::Text(max) => {
            let s = text()?;
            if s.chars().count() > max {
                return Err(bad(&format!("must be at most {max} characters")));
            }
            if s.contains('\0') {
                return Err(bad("must not contain NUL characters"));
            }
            v.clone()
        }
        Kind::Enum(values) => {
            let s = text()?;
            if !values.contains(&s) {
                return Err(bad(&format!("must be one of: {}", values.join(", "))));
            }
            v.clone()
        }
        Kind::Int(min, max) => match v.as_i64() {
            Some(n) if (min..=max).contains(&n) => v.clone(),
            _ => return Err(bad(&format!("must be an integer from {min} to {max}"))),
        },
        Kind::Num(min, max) => match v.as_f64() {
            Some(n) if n >= min && n <= max => v.clone(),
            _ => return Err(bad(&format!("must be a number from {min} to {max}"))),
        },
        Kind::Bool => match v {
            Value::Bool(_) => v.clone(),
            _ => return Err(bad("must be true or false")),
        },
        Kind::Object => match v {
            Value::Object(_) => {
                check_free_json(field, v)?;
                v.clone()
            }
            _ => return Err(bad("must be a JSON object")),
        },
        Kind::TextList(items, len) => {
            let list = v
                .as_array()
                .ok_or_else(|| bad("must be a list of strings"))?;
            if list.len() > items {
                return Err(bad(&format!("must have at most {items} items")));
            }
            for item in list {
                match item.as_str() {
                    Some(s) if s.chars().count() <= len && !s.contains('\0') => {}
                    _ => {
                        return Err(bad(&format!(
                            "items must be strings of at most {len} characters"
                        )))
                    }
                }
            }
            v.clone()
        }
        Kind::Ref(_) | Kind::GlobalRef(_) | Kind::Id => {
            let s = text()?;
            Uuid::parse_str(s).map_err(|_| bad("must be a UUID"))?;
            v.clone()
        }
        Kind::E164 => json!(E164::parse(text()?).map_err(|e| bad(&e))?.as_str()),
        Kind::Cidrs => {
            let list = v.as_array().ok_or_else(|| bad("must be a list of CIDRs"))?;
            if list.len() > 100 {
                return Err(bad("must have at most 100 items"));
            }
            let mut out = Vec::new();
            for item in list {
                let s = item.as_str().ok_or_else(|| bad("items must be strings"))?;
                out.push(Cidr::parse(s).map_err(|e| bad(&e))?.to_string());
            }
            json!(out)
        }
        Kind::Codecs => {
            let list = v
                .as_array()
                .ok_or_else(|| bad("must be a list of codec names"))?;
            if list.is_empty() || list.len() > 8 {
                return Err(bad("must list 1 to 8 codecs"));
            }
            let mut out: Vec<&str> = Vec::new();
            for item in list {
                let s = item.as_str().ok_or_else(|| bad("items must be strings"))?;
                let codec: CodecName = s.parse().map_err(|e: String| bad(&e))?;
                if out.contains(&codec.as_str()) {
                    return Err(bad("must not list a codec twice"));
                }
                out.push(codec.as_str());
            }
            json!(out)
        }
        Kind::SipHost => json!(SipHost::parse(text()?).map_err(|e| bad(&e))?.as_str()),
        Kind::Port => match v.as_i64() {
            Some(n) if (1..=65535).contains(&n) => v.clone(),
            _ => return Err(bad("must be a port from 1 to 65535")),
        },
        Kind::TransferTarget => json!(parse_transfer_target(text()?).map_err(|e| bad(&e))?),
        Kind::Url => {
            let s = text()?;
            let ok = (s.starts_with("http://") || s.starts_with("https://"))
                && s.len() <= 2048
                && reqwest::Url::parse(s).is_ok();
            if !ok {
                return Err(bad("must be an http(s) URL"));
            }
            v.clone()
        }
        Kind::Color => {
            let s = text()?;
            let hex = s.strip_prefix('#').unwrap_or("");
            if hex.len() != 6 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad("must be a color such as #1a73e8"));
            }
            v.clone()
        }
        Kind::Time => {
            let s = text()?;
            chrono::DateTime::parse_from_rfc3339(s).map_err(|_| bad("must be an RFC 3339 time"))?;
            v.clone()
        }
        Kind::Secret => {
            let s = text()?;
            if s.is_empty() || s.len() > 4096 {
                return Err(bad("must be 1 to 4096 characters"));
            }
            json!(secrets::encrypt(key, s))
        }
    })
}

/// Deepest nesting accepted in free-form JSON (settings, config, metadata).
const MAX_JSON_DEPTH: usize = 16;
/// Largest magnitude of a number in free-form JSON: PostgreSQL stores JSON
/// numbers as exact decimals, and one near f64::MAX would come back as a
/// literal that no longer parses as a double.
const MAX_JSON_NUMBER: f64 = 1e300;

/// Bounds free-form JSON so whatever is stored can be read back.
pub fn check_free_json(field: &str, v: &Value) -> Result<(), ApiError> {
    fn walk(v: &Value, depth: usize) -> Result<(), &'static str> {
        if depth > MAX_JSON_DEPTH {
            return Err("is nested too deeply");
        }
        match v {
            Value::Number(n) => match n.as_f64() {
                Some(x) if x.abs() <= MAX_JSON_NUMBER => Ok(()),
                _ => Err("contains a number out of range"),
            },
            Value::String(s) if s.contains('\0') => Err("contains a NUL character"),
            Value::Array(items) => items.iter().try_for_each(|i| walk(i, depth + 1)),
            Value::Object(map) => map.iter().try_for_each(|(k, i)| {
                if k.contains('\0') {
                    return Err("contains a NUL character");
                }
                walk(i, depth + 1)
            }),
            _ => Ok(()),
        }
    }
    walk(v, 0).map_err(|reason| ApiError::validation(field, reason))
}

/// Validates a create (`creating`) or patch body into the object to store.
pub fn check_body(
    fields: &[Field],
    body: Map<String, Value>,
    creating: bool,
    key: &[u8; 32],
) -> Result<Map<String, Value>, ApiError> {
    let mut out = Map::new();
    for (name, value) in body {
        let field = fields
            .iter()
            .find(|f| f.name == name && f.writable)
            .ok_or_else(|| ApiError::validation(name.clone(), "unknown or read-only field"))?;
        if value.is_null() {
            if !field.nullable {
                return Err(ApiError::validation(name, "must not be null"));
            }
            out.insert(name, Value::Null);
            continue;
        }
        out.insert(name.clone(), check(&name, field.kind, &value, key)?);
    }
    if creating {
        if let Some(missing) = fields
            .iter()
            .find(|f| f.required && !out.contains_key(f.name))
        {
            return Err(ApiError::validation(missing.name, "is required"));
        }
    }
    Ok(out)
}
