//! CEL conditions: compiled once at load, evaluated against values built
//! once per decision.
//!
//! Numbers: every integer from a document or the request becomes a CEL
//! `int` (never `uint`), so `task.num_nodes * 8` and `request.gpus > 8` work
//! as written; non-integral numbers become `double`.

use std::collections::HashMap;
use std::sync::Arc;

use cel::common::ast::{EntryExpr, Expr as Ast, MapExpr, StructExpr};
use cel::objects::{Key, Map};
use cel::{Context, IdedExpr, Program, Value};

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
    /// Compiles `source`, allowing only the variables in `allowed` (and,
    /// inside a macro such as `list.exists(x, ...)`, its own variables).
    pub(crate) fn compile(source: &str, allowed: &[&str]) -> Result<Self, String> {
        let program = Program::compile(source)
            .map_err(|e| format!("CEL syntax error in `{source}`: {}", e.to_string().trim()))?;
        let vars = Variables::of(program.expression());
        let mut uses = Uses::default();
        for var in &vars.free {
            match *var {
                "request" => uses.request = true,
                "task" => uses.task = true,
                "config" => uses.config = true,
                "resource" => uses.resource = true,
                _ => {}
            }
            if !allowed.contains(var) {
                let scope = if vars.bound.contains(var) {
                    format!(" (`{var}` is a macro variable, known only inside its macro)")
                } else {
                    String::new()
                };
                return Err(format!(
                    "CEL expression `{source}` uses unknown variable `{var}`{scope}; available here: {}",
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

/// The variables of an expression, told apart by scope.
#[derive(Debug, Default)]
struct Variables<'e> {
    /// Read from the context, in order of first appearance: every
    /// identifier not bound by an enclosing macro.
    free: Vec<&'e str>,
    /// Bound by some macro (`exists`, `all`, `exists_one`, `map`, `filter`).
    bound: Vec<&'e str>,
}

impl<'e> Variables<'e> {
    /// Walks `expr` once. A comprehension (what the parser expands a macro
    /// into) evaluates its range and initial value in the enclosing scope,
    /// its condition and step with its variables bound, and its result with
    /// only the accumulator bound; the accumulator's name starts with `@`,
    /// which no identifier a user writes can.
    fn of(expr: &'e IdedExpr) -> Self {
        let mut out = Self::default();
        out.walk(expr, &mut Vec::new());
        out
    }

    fn walk(&mut self, e: &'e IdedExpr, scope: &mut Vec<&'e str>) {
        match &e.expr {
            Ast::Ident(name) => {
                let name = name.as_str();
                if !name.starts_with('@') && !scope.contains(&name) && !self.free.contains(&name) {
                    self.free.push(name);
                }
            }
            Ast::Comprehension(c) => {
                self.walk(&c.iter_range, scope);
                self.walk(&c.accu_init, scope);
                let outer = scope.len();
                let own = std::iter::once(c.iter_var.as_str())
                    .chain(c.iter_var2.as_deref())
                    .chain(std::iter::once(c.accu_var.as_str()));
                for var in own {
                    scope.push(var);
                    if !var.starts_with('@') && !self.bound.contains(&var) {
                        self.bound.push(var);
                    }
                }
                self.walk(&c.loop_cond, scope);
                self.walk(&c.loop_step, scope);
                scope.truncate(outer);
                scope.push(c.accu_var.as_str());
                self.walk(&c.result, scope);
                scope.truncate(outer);
            }
            Ast::Call(call) => {
                if let Some(target) = &call.target {
                    self.walk(target, scope);
                }
                for arg in &call.args {
                    self.walk(arg, scope);
                }
            }
            Ast::Select(select) => self.walk(&select.operand, scope),
            Ast::List(list) => {
                for item in &list.elements {
                    self.walk(item, scope);
                }
            }
            Ast::Map(MapExpr { entries }) | Ast::Struct(StructExpr { entries, .. }) => {
                for entry in entries {
                    match &entry.expr {
                        EntryExpr::StructField(field) => self.walk(&field.value, scope),
                        EntryExpr::MapEntry(entry) => {
                            self.walk(&entry.key, scope);
                            self.walk(&entry.value, scope);
                        }
                    }
                }
            }
            Ast::Literal(_) | Ast::Unspecified => {}
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

    /// The comprehension macros compile over every list and map the
    /// request offers, nested too; a macro's variable is known inside that
    /// macro only, and shadows nothing outside it.
    #[test]
    fn macro_variables_are_bound_inside_their_macro() {
        for (src, vars) in [
            (r#"request.gpu_models.exists(m, m == "H100")"#, REQUEST_VARS),
            ("request.resources.all(r, r.gpus <= 8)", REQUEST_VARS),
            ("request.resources.exists_one(r, r.gpus > 0)", REQUEST_VARS),
            ("request.resources.map(r, r.gpus).exists(g, g > 4)", REQUEST_VARS),
            ("size(request.resources.filter(r, r.gpus > 0)) > 1", REQUEST_VARS),
            (r#"request.labels.exists(k, k == "team")"#, REQUEST_VARS),
            (r#"request.labels.all(k, request.labels[k] != "")"#, REQUEST_VARS),
            (
                "request.resources.exists(r, request.gpu_models.exists(m, m == r.accelerator))",
                REQUEST_VARS,
            ),
            (
                "request.resources.map(r, r.gpus > 0, r.total_gpus).all(n, n <= 16)",
                REQUEST_VARS,
            ),
            // The same name in two sibling macros.
            (
                "request.gpu_models.exists(m, m == 'H100') || request.gpu_models.all(m, m != 'A100')",
                REQUEST_VARS,
            ),
            // `resource` is a macro variable here, not the per-candidate one.
            ("request.resources.exists(resource, resource.gpus > 0)", REQUEST_VARS),
            (r#"resource.ports.exists(p, p == "22")"#, RESOURCE_VARS),
        ] {
            if let Err(e) = Expr::compile(src, vars) {
                panic!("{src}: {e}");
            }
        }
        for (src, unknown) in [
            ("foo.bar == 1", "foo"),
            (
                r#"request.gpu_models.exists(m, m == "H100") && m == "A100""#,
                "m",
            ),
            ("request.gpu_models.map(m, m).exists(x, x == m)", "m"),
            ("m.exists(m, true)", "m"),
            ("request.resources.exists(r, r.gpus > 0) && r.gpus > 1", "r"),
            ("request.resources.exists(r, resource.gpus > 0)", "resource"),
        ] {
            let err = Expr::compile(src, REQUEST_VARS).unwrap_err();
            assert!(
                err.contains(&format!("unknown variable `{unknown}`")),
                "{src}: {err}"
            );
        }
        let err = Expr::compile(
            "request.gpu_models.exists(m, true) && m == 'x'",
            REQUEST_VARS,
        )
        .unwrap_err();
        assert!(err.contains("known only inside its macro"), "{err}");
    }

    /// A macro variable named like a document is not a use of the document,
    /// so the document is not built for it.
    #[test]
    fn macro_variables_are_not_uses() {
        let e = Expr::compile("[1, 2].exists(task, task > 1)", REQUEST_VARS).unwrap();
        assert_eq!(e.uses(), Uses::default());
        let e = Expr::compile(
            "request.resources.exists(config, config.gpus > 0)",
            REQUEST_VARS,
        )
        .unwrap();
        assert_eq!(
            e.uses(),
            Uses {
                request: true,
                ..Uses::default()
            }
        );
        assert_eq!(
            eval("[1, 2].exists(task, task > 1)", serde_json::json!({})),
            Ok(true)
        );
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
