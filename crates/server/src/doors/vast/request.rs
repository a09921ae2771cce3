//! The caller's free text, read and bounded before anything is decided,
//! forwarded or stored: the body of a create (`PUT /api/v0/asks/{id}/`)
//! and the label of `PUT /api/v0/instances/{id}/`.
//!
//! Every field a caller writes is passed on to the Vast API and kept (most
//! of it, redacted) in the audit chain, so each one has a limit: a key
//! holder must not be able to grow the audit log by a megabyte per request,
//! or hand the upstream whatever it likes. Past a limit, or with a field of
//! the wrong type, the request is refused (400) with a message naming the
//! field, its size and the limit; nothing is ever dropped silently.
//!
//! The shapes are those `vastai` 1.9.1 and its SDK send: `label`, `image`,
//! `image_login`, `onstart` (also `onstart_cmd` and `entrypoint` from other
//! clients) are strings or null; `env` is a map of variable names to string
//! values (the CLI turns `--env '-e K=V -p 8080:8080'` into
//! `{"K": "V", "-p 8080:8080": "1"}`), or null; `args` is a list of
//! strings, one string, or null. Any other field may be any JSON value of
//! at most [`MAX_OTHER_BYTES`] as JSON text.

use serde_json::{Map, Value};

/// Most bytes of `label` (a create's or a label change's).
pub const MAX_LABEL_BYTES: usize = 1024;
/// Most bytes of `image`.
pub const MAX_IMAGE_BYTES: usize = 512;
/// Most entries of `env`.
pub const MAX_ENV_ENTRIES: usize = 128;
/// Most bytes of one `env` variable name.
pub const MAX_ENV_KEY_BYTES: usize = 256;
/// Most bytes of one `env` value.
pub const MAX_ENV_VALUE_BYTES: usize = 16 * 1024;
/// Most bytes of `env`, names and values together.
pub const MAX_ENV_TOTAL_BYTES: usize = 64 * 1024;
/// Most bytes of each of `onstart`, `onstart_cmd` and `entrypoint`.
pub const MAX_SCRIPT_BYTES: usize = 64 * 1024;
/// Most entries of `args`.
pub const MAX_ARGS: usize = 256;
/// Most bytes of `args`, all entries together.
pub const MAX_ARGS_TOTAL_BYTES: usize = 64 * 1024;
/// Most bytes of `image_login` (the registry login).
pub const MAX_IMAGE_LOGIN_BYTES: usize = 4 * 1024;
/// Most bytes of any other field: a string's bytes, another value's JSON
/// text.
pub const MAX_OTHER_BYTES: usize = 4 * 1024;
/// Most top-level fields of a create body.
pub const MAX_FIELDS: usize = 64;

/// The start-up command fields, each bounded by [`MAX_SCRIPT_BYTES`].
pub const SCRIPT_FIELDS: &[&str] = &["onstart", "onstart_cmd", "entrypoint"];

/// Why a create or label body is refused (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The body is not a JSON object.
    #[error("the {what} body must be a JSON object, as `vastai` sends")]
    NotAnObject {
        /// `create` or `label`.
        what: &'static str,
    },
    /// Too many top-level fields.
    #[error("the create body has {count} fields; Warden's Vast door accepts at most {limit}")]
    TooManyFields {
        /// Fields sent.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// A field (or an entry of one) is longer than its limit.
    #[error("`{field}` is {bytes} bytes; Warden's Vast door accepts at most {limit} bytes")]
    TooLong {
        /// The field, e.g. `label` or `env.HF_TOKEN`.
        field: String,
        /// Its size in bytes (UTF-8, or JSON text for a non-string).
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// A name (of a field, or of an `env` variable) is longer than its
    /// limit; a prefix of it is quoted.
    #[error(
        "{what} `{prefix}...` is {bytes} bytes; Warden's Vast door accepts at most {limit} bytes"
    )]
    NameTooLong {
        /// `the field name` or `the \`env\` variable name`.
        what: &'static str,
        /// Its first 32 characters.
        prefix: String,
        /// Its size in bytes.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// A list or map field has too many entries.
    #[error("`{field}` has {count} entries; Warden's Vast door accepts at most {limit}")]
    TooMany {
        /// The field.
        field: &'static str,
        /// Entries sent.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// A field holds a value of the wrong type.
    #[error("`{field}` must be {want}, not {found}")]
    WrongType {
        /// The field, e.g. `label` or `env.EPOCHS`.
        field: String,
        /// What it must be.
        want: &'static str,
        /// The JSON type sent.
        found: &'static str,
    },
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

fn bounded(field: &str, text: &str, limit: usize) -> Result<(), RequestError> {
    if text.len() > limit {
        return Err(RequestError::TooLong {
            field: field.to_owned(),
            bytes: text.len(),
            limit,
        });
    }
    Ok(())
}

fn bounded_name(what: &'static str, name: &str, limit: usize) -> Result<(), RequestError> {
    if name.len() > limit {
        return Err(RequestError::NameTooLong {
            what,
            prefix: name.chars().take(32).collect(),
            bytes: name.len(),
            limit,
        });
    }
    Ok(())
}

/// A string or null of at most `limit` bytes.
fn optional_text(field: &str, v: &Value, limit: usize) -> Result<(), RequestError> {
    match v {
        Value::Null => Ok(()),
        Value::String(s) => bounded(field, s, limit),
        other => Err(RequestError::WrongType {
            field: field.to_owned(),
            want: "a string (or null)",
            found: kind(other),
        }),
    }
}

/// Checks a label: a string (or null) of at most [`MAX_LABEL_BYTES`].
pub fn check_label(v: &Value) -> Result<(), RequestError> {
    optional_text("label", v, MAX_LABEL_BYTES)
}

fn check_env(v: &Value) -> Result<(), RequestError> {
    let vars = match v {
        Value::Null => return Ok(()),
        Value::Object(vars) => vars,
        other => {
            return Err(RequestError::WrongType {
                field: "env".to_owned(),
                want: "a map of variable names to string values (what `vastai create instance --env '-e K=V -p 8080:8080'` sends)",
                found: kind(other),
            })
        }
    };
    if vars.len() > MAX_ENV_ENTRIES {
        return Err(RequestError::TooMany {
            field: "env",
            count: vars.len(),
            limit: MAX_ENV_ENTRIES,
        });
    }
    let mut total = 0usize;
    for (name, value) in vars {
        bounded_name("the `env` variable name", name, MAX_ENV_KEY_BYTES)?;
        let Value::String(value) = value else {
            return Err(RequestError::WrongType {
                field: format!("env.{name}"),
                want: "a string",
                found: kind(value),
            });
        };
        bounded(&format!("env.{name}"), value, MAX_ENV_VALUE_BYTES)?;
        total = total.saturating_add(name.len()).saturating_add(value.len());
    }
    bounded_total("env", total, MAX_ENV_TOTAL_BYTES)
}

fn bounded_total(field: &str, bytes: usize, limit: usize) -> Result<(), RequestError> {
    if bytes > limit {
        return Err(RequestError::TooLong {
            field: field.to_owned(),
            bytes,
            limit,
        });
    }
    Ok(())
}

fn check_args(v: &Value) -> Result<(), RequestError> {
    match v {
        Value::Null => Ok(()),
        Value::String(s) => bounded("args", s, MAX_ARGS_TOTAL_BYTES),
        Value::Array(items) => {
            if items.len() > MAX_ARGS {
                return Err(RequestError::TooMany {
                    field: "args",
                    count: items.len(),
                    limit: MAX_ARGS,
                });
            }
            let mut total = 0usize;
            for (i, item) in items.iter().enumerate() {
                let Value::String(s) = item else {
                    return Err(RequestError::WrongType {
                        field: format!("args[{i}]"),
                        want: "a string",
                        found: kind(item),
                    });
                };
                total = total.saturating_add(s.len());
            }
            bounded_total("args", total, MAX_ARGS_TOTAL_BYTES)
        }
        other => Err(RequestError::WrongType {
            field: "args".to_owned(),
            want: "a list of strings (or null)",
            found: kind(other),
        }),
    }
}

/// Any other field: a string's bytes, or another value's JSON text.
fn check_other(field: &str, v: &Value) -> Result<(), RequestError> {
    match v {
        Value::String(s) => bounded(field, s, MAX_OTHER_BYTES),
        Value::Null | Value::Bool(_) | Value::Number(_) => Ok(()),
        other => bounded(field, &other.to_string(), MAX_OTHER_BYTES),
    }
}

/// Checks a create body; the map is passed on as it was sent.
pub fn create_body(body: Value) -> Result<Map<String, Value>, RequestError> {
    let Value::Object(body) = body else {
        return Err(RequestError::NotAnObject { what: "create" });
    };
    if body.len() > MAX_FIELDS {
        return Err(RequestError::TooManyFields {
            count: body.len(),
            limit: MAX_FIELDS,
        });
    }
    for (field, value) in &body {
        match field.as_str() {
            "label" => check_label(value)?,
            "image" => optional_text(field, value, MAX_IMAGE_BYTES)?,
            "image_login" => optional_text(field, value, MAX_IMAGE_LOGIN_BYTES)?,
            "env" => check_env(value)?,
            "args" => check_args(value)?,
            f if SCRIPT_FIELDS.contains(&f) => optional_text(field, value, MAX_SCRIPT_BYTES)?,
            _ => {
                bounded_name("the field name", field, MAX_OTHER_BYTES)?;
                check_other(field, value)?;
            }
        }
    }
    Ok(body)
}

/// Checks the body of `PUT /instances/{id}/` (and its bulk form) as far as
/// free text goes: the `label`, if any.
pub fn manage_body(body: &Value) -> Result<(), RequestError> {
    let Value::Object(map) = body else {
        return Err(RequestError::NotAnObject { what: "label" });
    };
    match map.get("label") {
        Some(label) => check_label(label),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn create(v: Value) -> Result<Map<String, Value>, String> {
        create_body(v).map_err(|e| e.to_string())
    }

    #[test]
    fn what_the_cli_sends_is_accepted_as_is() {
        let body = json!({"client_id": "me", "image": "pytorch/pytorch", "env": {"HF_TOKEN": "x", "-p 8080:8080": "1"},
            "price": null, "disk": 20.0, "label": "run=7", "extra": null, "onstart": "echo hi",
            "image_login": null, "python_utf8": false, "runtype": "args", "args": ["-c", "sleep infinity"],
            "volume_info": {"create_new": true, "size": 10}});
        assert_eq!(Value::Object(create(body.clone()).unwrap()), body);
        assert!(create(json!({})).is_ok());
    }

    #[test]
    fn each_field_is_bounded_and_the_message_names_it() {
        let big = |n: usize| "x".repeat(n);
        for (field, value, limit) in [
            ("label", json!(big(MAX_LABEL_BYTES + 1)), MAX_LABEL_BYTES),
            ("image", json!(big(MAX_IMAGE_BYTES + 1)), MAX_IMAGE_BYTES),
            (
                "image_login",
                json!(big(MAX_IMAGE_LOGIN_BYTES + 1)),
                MAX_IMAGE_LOGIN_BYTES,
            ),
            (
                "onstart",
                json!(big(MAX_SCRIPT_BYTES + 1)),
                MAX_SCRIPT_BYTES,
            ),
            (
                "onstart_cmd",
                json!(big(MAX_SCRIPT_BYTES + 1)),
                MAX_SCRIPT_BYTES,
            ),
            (
                "entrypoint",
                json!(big(MAX_SCRIPT_BYTES + 1)),
                MAX_SCRIPT_BYTES,
            ),
            ("extra", json!(big(MAX_OTHER_BYTES + 1)), MAX_OTHER_BYTES),
            (
                "args",
                json!([
                    big(MAX_ARGS_TOTAL_BYTES / 2),
                    big(MAX_ARGS_TOTAL_BYTES / 2 + 1)
                ]),
                MAX_ARGS_TOTAL_BYTES,
            ),
        ] {
            let err = create(json!({ field: value })).unwrap_err();
            assert!(
                err.starts_with(&format!("`{field}` is "))
                    && err.ends_with(&format!("at most {limit} bytes")),
                "{field}: {err}"
            );
            // At the limit it passes.
            let at = match &value {
                Value::Array(_) => json!([big(MAX_ARGS_TOTAL_BYTES)]),
                _ => json!(big(limit)),
            };
            assert!(create(json!({ field: at })).is_ok(), "{field}");
        }
        let nested = json!({"volume_info": {"x": big(MAX_OTHER_BYTES)}});
        assert!(create(nested).unwrap_err().starts_with("`volume_info` is "));
    }

    #[test]
    fn the_label_of_a_100_000_char_request_is_refused_with_its_size() {
        let err = create(json!({"label": "a".repeat(100_000)})).unwrap_err();
        assert_eq!(
            err,
            "`label` is 100000 bytes; Warden's Vast door accepts at most 1024 bytes"
        );
        let err = manage_body(&json!({"label": "a".repeat(100_000)})).unwrap_err();
        assert!(err.to_string().starts_with("`label` is 100000 bytes"));
        assert!(manage_body(&json!({"state": "stopped"})).is_ok());
        assert!(manage_body(&json!({"label": null})).is_ok());
    }

    #[test]
    fn env_is_bounded_per_entry_and_in_total() {
        let many: Map<String, Value> = (0..=MAX_ENV_ENTRIES)
            .map(|i| (format!("V{i}"), json!("1")))
            .collect();
        assert_eq!(
            create(json!({"env": many})).unwrap_err(),
            "`env` has 129 entries; Warden's Vast door accepts at most 128"
        );
        let err = create(json!({"env": {"K": "v".repeat(MAX_ENV_VALUE_BYTES + 1)}})).unwrap_err();
        assert!(err.starts_with("`env.K` is 16385 bytes"), "{err}");
        let err = create(json!({"env": {"k".repeat(300): "v"}})).unwrap_err();
        assert_eq!(
            err,
            format!("the `env` variable name `{}...` is 300 bytes; Warden's Vast door accepts at most 256 bytes", "k".repeat(32))
        );
        let total: Map<String, Value> = (0..5)
            .map(|i| (format!("V{i}"), json!("v".repeat(MAX_ENV_VALUE_BYTES))))
            .collect();
        let err = create(json!({"env": total})).unwrap_err();
        assert!(err.starts_with("`env` is 81930 bytes"), "{err}");
    }

    #[test]
    fn wrong_types_are_refused_not_dropped() {
        for (body, want) in [
            (
                json!({"label": 7}),
                "`label` must be a string (or null), not a number",
            ),
            (
                json!({"label": ["a"]}),
                "`label` must be a string (or null), not a list",
            ),
            (
                json!({"label": {"a": 1}}),
                "`label` must be a string (or null), not a map",
            ),
            (
                json!({"image": true}),
                "`image` must be a string (or null), not a boolean",
            ),
            (
                json!({"env": {"EPOCHS": 3}}),
                "`env.EPOCHS` must be a string, not a number",
            ),
            (
                json!({"env": {"A": null}}),
                "`env.A` must be a string, not null",
            ),
            (
                json!({"args": [1]}),
                "`args[0]` must be a string, not a number",
            ),
            (
                json!({"args": {"a": "b"}}),
                "`args` must be a list of strings (or null), not a map",
            ),
        ] {
            assert_eq!(create(body.clone()).unwrap_err(), want, "{body}");
        }
        for env in [json!("-e K=V"), json!(["K=V"]), json!(1)] {
            let err = create(json!({ "env": env })).unwrap_err();
            assert!(
                err.starts_with("`env` must be a map of variable names to string values"),
                "{err}"
            );
        }
        assert!(manage_body(&json!({"label": 5}))
            .unwrap_err()
            .to_string()
            .contains("`label` must be a string"));
        assert!(create(json!([1])).is_err());
    }

    #[test]
    fn the_number_of_fields_is_bounded() {
        let fields: Map<String, Value> = (0..=MAX_FIELDS)
            .map(|i| (format!("f{i}"), json!(1)))
            .collect();
        assert_eq!(
            create(Value::Object(fields)).unwrap_err(),
            "the create body has 65 fields; Warden's Vast door accepts at most 64"
        );
    }
}
