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
    native: Option<IntCompare>,
}

/// An integer field of `resource` the evaluator can read without building
/// CEL values. (`request` fields are left to CEL: its `request` value is
/// built once per decision, and reading the live state instead could differ
/// after a rule pruned candidates.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IntField {
    /// `resource.index`.
    Index,
    /// `resource.gpus`.
    Gpus,
    /// `resource.total_gpus`.
    TotalGpus,
}

/// `resource.FIELD OP INT`, the most common shape of condition (for
/// example `resource.gpus` compared with `0`), on a field that is always a
/// CEL `int`: evaluated natively, with exactly CEL's answer (an `int`
/// against an `int` literal compares as `i64`), and without building the
/// CEL context. Every other expression runs in CEL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IntCompare {
    pub(crate) field: IntField,
    op: std::cmp::Ordering,
    /// `op` holds (`==`, `<`, `>`) or, negated, fails (`!=`, `>=`, `<=`).
    negated: bool,
    literal: i64,
}

impl IntCompare {
    fn parse(source: &str) -> Option<Self> {
        use std::cmp::Ordering::{Equal, Greater, Less};
        let s = source.trim();
        let at = s.find(['=', '!', '<', '>'])?;
        let (lhs, rest) = s.split_at(at);
        let (op, negated, rhs) = [
            ("==", Equal, false),
            ("!=", Equal, true),
            ("<=", Greater, true),
            (">=", Less, true),
            ("<", Less, false),
            (">", Greater, false),
        ]
        .iter()
        .find_map(|(text, op, neg)| rest.strip_prefix(text).map(|r| (*op, *neg, r)))?;
        let field = match lhs.trim() {
            "resource.index" => IntField::Index,
            "resource.gpus" => IntField::Gpus,
            "resource.total_gpus" => IntField::TotalGpus,
            _ => return None,
        };
        let rhs = rhs.trim();
        let digits = rhs.strip_prefix('-').unwrap_or(rhs);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let literal = rhs.parse().ok()?;
        Some(Self {
            field,
            op,
            negated,
            literal,
        })
    }

    /// The comparison's result for the field's value.
    pub(crate) fn eval(&self, value: i64) -> bool {
        (value.cmp(&self.literal) == self.op) != self.negated
    }
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
            native: IntCompare::parse(source),
        })
    }

    /// The native form of a simple integer comparison, if it is one.
    pub(crate) fn native(&self) -> Option<IntCompare> {
        self.native
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

    /// The native comparisons give CEL's answer for every operator, sign and
    /// spacing; anything else is left to CEL.
    #[test]
    fn native_comparisons_agree_with_cel() {
        let ops = ["==", "!=", "<", "<=", ">", ">="];
        let fields = ["resource.gpus", "resource.index", "resource.total_gpus"];
        let mut compared = 0;
        for field in fields {
            for op in ops {
                for literal in ["0", "1", "8", "-1", "9223372036854775807"] {
                    for spacing in [" ", ""] {
                        let src = format!("{field}{spacing}{op}{spacing}{literal}");
                        let e = Expr::compile(&src, RESOURCE_VARS).unwrap();
                        let native = e.native().unwrap_or_else(|| panic!("not native: {src}"));
                        for value in [-2i64, -1, 0, 1, 7, 8, 9, i64::MAX] {
                            let (var, key) = field.split_once('.').unwrap();
                            let mut ctx = Context::with_env(Arc::new(cel::Env::stdlib()));
                            let key = ["gpus", "index", "total_gpus"]
                                .into_iter()
                                .find(|k| *k == key)
                                .unwrap();
                            ctx.add_variable_from_value(var, map(vec![(key, Value::Int(value))]));
                            assert_eq!(
                                Ok(native.eval(value)),
                                e.eval_bool(&ctx),
                                "{src} with {value}"
                            );
                            compared += 1;
                        }
                    }
                }
            }
        }
        assert!(compared > 1000);
        for src in [
            "resource.gpus > 0u",
            "resource.gpus > 0x1",
            "resource.gpus > 1.5",
            "resource.gpus > 0 && true",
            "(resource.gpus > 0)",
            "resource.memory_gb > 0",
            "resource.disk_size > 0",
            "request.gpus > 0",
            "request.num_nodes == 1",
            "0 < resource.gpus",
            "resource.gpus > 99999999999999999999",
            "resource.gpus >= -",
        ] {
            let native = Expr::compile(src, RESOURCE_VARS)
                .ok()
                .and_then(|e| e.native());
            assert_eq!(native, None, "{src}");
        }
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
