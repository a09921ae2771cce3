//! CEL conditions: compiled once at load, evaluated against values built
//! once per decision.
//!
//! Numbers: every integer from a document or the request becomes a CEL
//! `int` (never `uint`), so `task.num_nodes * 8` and `request.gpus > 8` work
//! as written; non-integral numbers become `double`.

use std::collections::HashMap;
use std::sync::Arc;

use cel::objects::{Key, Map};
use cel::{Context, Program, Value};

/// Which variables an expression reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Uses {
    /// `request`.
    pub request: bool,
    /// `task`.
    pub task: bool,
    /// `config`.
    pub config: bool,
    /// `resource`.
    pub resource: bool,
}

impl Uses {
    /// Union of two sets.
    pub fn or(self, other: Uses) -> Uses {
        Uses {
            request: self.request || other.request,
            task: self.task || other.task,
            config: self.config || other.config,
            resource: self.resource || other.resource,
        }
    }
}

/// A compiled CEL condition.
#[derive(Debug)]
pub struct Expr {
    source: String,
    program: Program,
    uses: Uses,
}

/// Variables a condition may use, by where it appears.
pub(crate) const REQUEST_VARS: &[&str] = &["request", "task", "config"];
pub(crate) const RESOURCE_VARS: &[&str] = &["request", "task", "config", "resource"];

impl Expr {
    /// Compiles `source`, allowing only the variables in `allowed`.
    pub(crate) fn compile(source: &str, allowed: &[&str]) -> Result<Self, String> {
        let program = Program::compile(source)
            .map_err(|e| format!("CEL syntax error in `{source}`: {}", e.to_string().trim()))?;
        let mut uses = Uses::default();
        for var in program.references().variables() {
            match var {
                "request" => uses.request = true,
                "task" => uses.task = true,
                "config" => uses.config = true,
                "resource" => uses.resource = true,
                _ => {}
            }
            if !allowed.contains(&var) {
                return Err(format!(
                    "CEL expression `{source}` uses unknown variable `{var}`; available here: {}",
                    allowed.join(", ")
                ));
            }
        }
        Ok(Self {
            source: source.to_owned(),
            program,
            uses,
        })
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The variables it reads.
    pub fn uses(&self) -> Uses {
        self.uses
    }

    /// Evaluates to a bool; any other result or an evaluation error is an
    /// error message (the caller fails closed).
    pub(crate) fn eval_bool(&self, ctx: &Context<'_, '_>) -> Result<bool, String> {
        match self.program.execute(ctx) {
            Ok(Value::Bool(b)) => Ok(b),
            Ok(other) => Err(format!(
                "condition `{}` gave {} instead of true/false",
                self.source,
                type_name(&other)
            )),
            Err(e) => Err(format!(
                "condition `{}` could not be evaluated: {e} (use `has(x.field)` to test for optional fields)",
                self.source
            )),
        }
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::List(_) => "a list",
        Value::Map(_) => "a map",
        Value::Int(_) | Value::UInt(_) => "an int",
        Value::Float(_) => "a double",
        Value::String(_) => "a string",
        Value::Bytes(_) => "bytes",
        Value::Bool(_) => "a bool",
        Value::Null => "null",
        _ => "a non-boolean value",
    }
}

/// Converts a JSON document into a CEL value (integers as `int`).
pub(crate) fn from_json(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::Int(i)
            } else if let Some(u) = n.as_u64() {
                // Beyond i64: keep the magnitude as a double rather than a uint
                // that would not mix with ints.
                Value::Float(u as f64)
            } else {
                Value::Float(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        serde_json::Value::String(s) => Value::String(Arc::new(s.clone())),
        serde_json::Value::Array(a) => Value::List(Arc::new(a.iter().map(from_json).collect())),
        serde_json::Value::Object(o) => {
            let mut m: HashMap<Key, Value> = HashMap::with_capacity(o.len());
            for (k, v) in o {
                m.insert(Key::String(Arc::new(k.clone())), from_json(v));
            }
            Value::Map(Map { map: Arc::new(m) })
        }
    }
}

/// Builds a CEL map from string keys.
pub(crate) fn map(entries: Vec<(&'static str, Value)>) -> Value {
    let mut m: HashMap<Key, Value> = HashMap::with_capacity(entries.len());
    for (k, v) in entries {
        m.insert(Key::String(Arc::new(k.to_owned())), v);
    }
    Value::Map(Map { map: Arc::new(m) })
}

/// A CEL string or null.
pub(crate) fn opt_str(s: Option<&str>) -> Value {
    s.map_or(Value::Null, |s| Value::String(Arc::new(s.to_owned())))
}

/// A CEL string.
pub(crate) fn string(s: &str) -> Value {
    Value::String(Arc::new(s.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(src: &str, task: serde_json::Value) -> Result<bool, String> {
        let e = Expr::compile(src, REQUEST_VARS)?;
        let mut ctx = Context::with_env(Arc::new(cel::Env::stdlib()));
        ctx.add_variable_from_value("task", from_json(&task));
        e.eval_bool(&ctx)
    }

    #[test]
    fn yaml_integers_are_cel_ints() {
        let task = serde_json::json!({"num_nodes": 4, "mem": 1.5});
        assert_eq!(eval("task.num_nodes * 8 == 32", task.clone()), Ok(true));
        assert_eq!(eval("task.num_nodes > 2", task.clone()), Ok(true));
        assert_eq!(eval("task.mem > 1", task), Ok(true));
    }

    #[test]
    fn errors_are_reported_not_swallowed() {
        let task = serde_json::json!({});
        let err = eval("task.missing == 1", task.clone()).unwrap_err();
        assert!(err.contains("has("), "{err}");
        let err = eval("1 + 1", task).unwrap_err();
        assert!(err.contains("an int"), "{err}");
        let err = Expr::compile("foo.bar", REQUEST_VARS).unwrap_err();
        assert!(err.contains("unknown variable `foo`"), "{err}");
        assert!(Expr::compile("task.(", REQUEST_VARS)
            .unwrap_err()
            .contains("syntax"));
    }
}
