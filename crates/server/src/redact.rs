//! Redaction of request documents before they enter the audit chain.
//!
//! The audit chain keeps each decided request (for `warden replay`), but
//! never a secret. What is replaced by `"<redacted>"`, at any depth of the
//! task or config document:
//!
//! - the scripts under `run` and `setup` (free text that may carry inline
//!   credentials), and `_user_specified_yaml` (SkyPilot's copy of the
//!   user's whole task file, secrets included);
//! - every value under a key named `envs`, `secrets` or `env` (SkyPilot
//!   task environment variables and secrets, Kubernetes pod `env`), keeping
//!   the variable names;
//! - the value of any key whose name contains `token`, `secret`,
//!   `password`, `passwd`, `credential`, `private_key`, `api_key`,
//!   `apikey` or `access_key` (any case).
//!
//! Rules that read the values of redacted fields therefore replay against
//! `"<redacted>"`; `warden replay` says so in its README section.

use serde_json::Value;

/// What redacted values become.
pub const REDACTED: &str = "<redacted>";

const SECRET_WORDS: &[&str] = &[
    "token",
    "secret",
    "password",
    "passwd",
    "credential",
    "private_key",
    "api_key",
    "apikey",
    "access_key",
];

/// Whether the value under `key` is a secret as a whole.
fn is_secret_key(key: &str) -> bool {
    if matches!(key, "run" | "setup" | "_user_specified_yaml") {
        return true;
    }
    let lower = key.to_ascii_lowercase();
    SECRET_WORDS.iter().any(|w| lower.contains(w))
}

/// Whether `key` holds a map or list of variables whose values are secret
/// but whose names are not.
fn is_variables_key(key: &str) -> bool {
    matches!(key, "envs" | "secrets" | "env")
}

/// Redacts `doc` in place.
pub fn redact(doc: &mut Value) {
    match doc {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                if is_secret_key(key) {
                    *value = Value::String(REDACTED.to_owned());
                } else if is_variables_key(key) {
                    redact_values(value);
                } else {
                    redact(value);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

/// Replaces every scalar value below `v`, keeping map keys (variable names)
/// and, in lists of `{name, value}` items (Kubernetes `env`), the names.
fn redact_values(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                if key == "name" {
                    continue;
                }
                redact_values(value);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_values),
        Value::Null => {}
        other => *other = Value::String(REDACTED.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_are_replaced_and_names_kept() {
        let mut doc = json!({
            "name": "train",
            "envs": {"HF_TOKEN": "hf_abc", "EPOCHS": 3},
            "secrets": {"WANDB_API_KEY": "k"},
            "run": "python train.py",
            "_user_specified_yaml": "envs:\n  HF_TOKEN: hf_abc\n",
            "resources": {"accelerators": "H100:8", "labels": {"team": "ml"}},
            "kubernetes": {"pod_config": {"spec": {"containers": [
                {"env": [{"name": "AWS_SECRET", "value": "s3cr3t"}]}
            ]}}},
            "api_server": {"service_account_token": "sky_xyz", "endpoint": "http://h"},
            "aws": {"Access_Key_Id": "AKIA"},
        });
        redact(&mut doc);
        let text = doc.to_string();
        for secret in ["hf_abc", "\"k\"", "s3cr3t", "sky_xyz", "AKIA"] {
            assert!(!text.contains(secret), "{secret} left in {text}");
        }
        assert_eq!(doc["envs"]["HF_TOKEN"], REDACTED);
        assert_eq!(doc["envs"]["EPOCHS"], REDACTED);
        assert_eq!(
            doc["kubernetes"]["pod_config"]["spec"]["containers"][0]["env"][0]["name"],
            "AWS_SECRET"
        );
        assert_eq!(doc["resources"]["accelerators"], "H100:8");
        assert_eq!(doc["api_server"]["endpoint"], "http://h");
        assert_eq!(doc["run"], REDACTED);
    }
}
