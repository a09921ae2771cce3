//! Evaluation: one request against one policy.
//!
//! Semantics, in order:
//! 1. The team is resolved ([`Policy::resolve_request_team`]). An unresolved,
//!    non-controller request is denied by the reason `team.resolve`.
//!    A request whose subject may not do what it does in that team (see
//!    [`crate::access`] and [`LaunchRequest::access_question`]) is denied by
//!    the reason `access`.
//! 2. Rules run in order: the implicit team limits (`team.*`) first, then the
//!    `rules` list. A rule is skipped when its mode is `off`, when the
//!    request is a controller task and the rule has no `controllers: true`,
//!    or when its `match` does not hold. `match.resource` selects the
//!    candidates the rule acts on; a rule with no matching candidate is skipped.
//! 3. Each rule sees the request as left by the rules before it (a
//!    mutation made by rule 1 is visible to rule 2's condition and action).
//!    CEL `task` and `config` are the documents as received, with earlier
//!    `set` mutations applied.
//! 4. Every rule runs, also after a denial, so the user sees every reason at
//!    once. In `warn` mode, what the rule would deny or change is recorded as a
//!    warning and not applied.
//! 5. A rule whose condition cannot be evaluated (a CEL error, a non-boolean
//!    result) fails closed: it denies in `enforce` mode and warns in `warn`.
//! 6. A denial by a rule that an active time-limited exception names (for
//!    the team, or the team and this user) is lifted: the reason becomes a
//!    warning saying which exception, and the decision lists it in
//!    `overrides` ([`crate::exception`]).
//! 7. The verdict is deny when any reason denies; a denied decision carries
//!    no mutations.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use cel::{Context, Value};

use crate::decision::{
    AppliedMutation, Decision, Doc, Effect, Mutation, Reason, ResourceField, Verdict,
};
use crate::expr::{from_json, map, opt_str, string, Expr, IntField};
use crate::ids::{RuleName, TeamName};
use crate::money::Usd;
use crate::policy::{Action, Mode, Policy, Rule, UnknownVersion};
use crate::request::{Autostop, LaunchRequest, Resource};

/// Reads the value at `path` in a JSON document.
pub fn get_path<'a>(root: &'a serde_json::Value, path: &[String]) -> Option<&'a serde_json::Value> {
    let mut cur = root;
    for key in path {
        cur = cur.as_object()?.get(key)?;
    }
    Some(cur)
}

/// Sets the value at `path` in a JSON document, creating (or replacing
/// non-map values with) maps on the way.
pub fn set_path(root: &mut serde_json::Value, path: &[String], value: serde_json::Value) {
    let Some((last, parents)) = path.split_last() else {
        *root = value;
        return;
    };
    let mut cur = root;
    for key in parents {
        if !cur.is_object() {
            *cur = serde_json::Value::Object(serde_json::Map::new());
        }
        let Some(obj) = cur.as_object_mut() else {
            return;
        };
        cur = obj
            .entry(key.clone())
            .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
    }
    if !cur.is_object() {
        *cur = serde_json::Value::Object(serde_json::Map::new());
    }
    if let Some(obj) = cur.as_object_mut() {
        obj.insert(last.clone(), value);
    }
}

enum Outcome {
    Pass,
    Deny(String),
    Mutate(Vec<Mutation>, String),
}

/// The request as left by the rules so far.
struct State<'r> {
    req: &'r LaunchRequest,
    team: Option<TeamName>,
    resources: Vec<Resource>,
    alive: Vec<bool>,
    autostop: Option<Autostop>,
    labels: BTreeMap<String, String>,
    volumes: BTreeMap<String, serde_json::Value>,
    sets: Vec<(crate::decision::Doc, Vec<String>, serde_json::Value)>,
}

impl<'r> State<'r> {
    fn alive(&self) -> impl Iterator<Item = (usize, &Resource)> {
        self.resources
            .iter()
            .enumerate()
            .filter(|(i, _)| self.alive.get(*i).copied().unwrap_or(false))
    }

    fn total_gpus(&self, r: &Resource) -> u64 {
        u64::from(r.gpus_per_node()) * u64::from(self.req.num_nodes)
    }

    fn doc(&self, doc: Doc) -> Cow<'r, serde_json::Value> {
        let orig = match doc {
            Doc::Task => &self.req.task,
            Doc::Config => &self.req.config,
        };
        if !self.sets.iter().any(|(d, _, _)| *d == doc) {
            return Cow::Borrowed(orig);
        }
        let mut v = orig.clone();
        for (d, path, value) in &self.sets {
            if *d == doc {
                set_path(&mut v, path, value.clone());
            }
        }
        Cow::Owned(v)
    }

    fn apply(&mut self, m: &Mutation) {
        match m {
            Mutation::UseSpot { resources } => {
                for i in resources {
                    if let Some(r) = self.resources.get_mut(*i) {
                        r.use_spot = true;
                    }
                }
            }
            Mutation::SetResource {
                resources,
                field,
                value,
            } => {
                for i in resources {
                    if let Some(r) = self.resources.get_mut(*i) {
                        let s = value.as_str().map(str::to_owned);
                        match field {
                            ResourceField::Cloud => r.cloud = s,
                            ResourceField::Region => r.region = s,
                            ResourceField::Zone => r.zone = s,
                            ResourceField::ImageId => r.image_id = s,
                            ResourceField::DiskSize => r.disk_size = value.as_i64(),
                        }
                    }
                }
            }
            Mutation::PruneResources { resources } => {
                for i in resources {
                    if let Some(a) = self.alive.get_mut(*i) {
                        *a = false;
                    }
                }
            }
            Mutation::SetAutostop(a) => self.autostop = Some(*a),
            Mutation::AddLabels { labels } => {
                self.labels
                    .extend(labels.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            Mutation::AddVolumes { volumes } => {
                self.volumes
                    .extend(volumes.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            Mutation::SetPath { doc, path, value } => {
                self.sets.push((*doc, path.clone(), value.clone()));
            }
        }
    }

    fn hourly(&self, policy: &Policy, r: &Resource) -> Option<Usd> {
        if let Some(q) = &r.quote {
            let per_node = if r.use_spot { q.spot } else { q.on_demand };
            return Some(per_node.times(u64::from(self.req.num_nodes)));
        }
        match &r.accelerator {
            None => Some(Usd::ZERO),
            Some(a) => policy
                .prices
                .per_gpu_hour(&a.model, r.use_spot)
                .map(|p| p.times(self.total_gpus(r))),
        }
    }

    fn worst_hourly(&self, policy: &Policy) -> Option<Usd> {
        let mut worst = Usd::ZERO;
        for (_, r) in self.alive() {
            worst = worst.max(self.hourly(policy, r)?);
        }
        Some(worst)
    }

    fn describe(&self, r: &Resource) -> String {
        let what = match &r.accelerator {
            Some(a) => format!("{}:{}", a.model, a.count),
            None => "CPU only".to_owned(),
        };
        if self.req.num_nodes == 1 {
            what
        } else {
            format!("{what} × {} nodes", self.req.num_nodes)
        }
    }

    fn substitute(&self, s: &str) -> String {
        if !s.contains("${") {
            return s.to_owned();
        }
        s.replace("${team}", self.team.as_ref().map_or("", TeamName::as_str))
            .replace("${user}", self.req.principal.user.as_deref().unwrap_or(""))
            .replace("${request}", &self.req.request_name)
    }

    /// An integer field of candidate `r` (index `i`), as
    /// [`Self::resource_value`] gives it to CEL.
    fn int_field(&self, field: IntField, i: usize, r: &Resource) -> i64 {
        match field {
            IntField::Index => i64::try_from(i).unwrap_or(i64::MAX),
            IntField::Gpus => i64::from(r.gpus_per_node()),
            IntField::TotalGpus => i64::try_from(self.total_gpus(r)).unwrap_or(i64::MAX),
        }
    }

    fn resource_value(&self, policy: &Policy, i: usize, r: &Resource) -> Value {
        let mut f = Fields::new(policy.cel_fields);
        // The same values the native comparisons read (`int_field`).
        f.add(field::INDEX, || {
            Value::Int(self.int_field(IntField::Index, i, r))
        });
        f.add(field::ACCELERATOR, || {
            opt_str(r.accelerator.as_ref().map(|a| a.model.as_str()))
        });
        f.add(field::GPUS, || {
            Value::Int(self.int_field(IntField::Gpus, i, r))
        });
        f.add(field::TOTAL_GPUS, || {
            Value::Int(self.int_field(IntField::TotalGpus, i, r))
        });
        f.add(field::CLOUD, || opt_str(r.cloud.as_deref()));
        f.add(field::REGION, || opt_str(r.region.as_deref()));
        f.add(field::ZONE, || opt_str(r.zone.as_deref()));
        f.add(field::USE_SPOT, || Value::Bool(r.use_spot));
        f.add(field::CPUS, || opt_str(r.cpus.as_deref()));
        f.add(field::MEMORY, || opt_str(r.memory.as_deref()));
        f.add(field::MEMORY_GB, || {
            r.memory_gb().map_or(Value::Null, Value::Float)
        });
        f.add(field::DISK_SIZE, || {
            r.disk_size.map_or(Value::Null, Value::Int)
        });
        f.add(field::IMAGE_ID, || opt_str(r.image_id.as_deref()));
        f.add(field::PORTS, || {
            Value::List(Arc::new(r.ports.iter().map(|p| string(p)).collect()))
        });
        f.add(field::HOURLY_USD, || {
            self.hourly(policy, r)
                .map_or(Value::Null, |u| Value::Float(u.as_dollars_f64()))
        });
        let host = r.host.as_ref();
        f.add(field::RELIABILITY, || {
            host.and_then(|h| h.reliability)
                .map_or(Value::Null, Value::Float)
        });
        f.add(field::VERIFIED, || {
            host.and_then(|h| h.verified)
                .map_or(Value::Null, Value::Bool)
        });
        f.add(field::HOST_ID, || {
            opt_str(host.and_then(|h| h.host_id.as_deref()))
        });
        f.into_value()
    }

    fn request_value(&self, policy: &Policy) -> Value {
        let req = self.req;
        let alive: Vec<(usize, &Resource)> = self.alive().collect();
        let mut f = Fields::new(policy.cel_fields);
        f.add(field::DOOR, || string(req.door.as_str()));
        f.add(field::NAME, || string(&req.request_name));
        f.add(field::USER, || opt_str(req.principal.user.as_deref()));
        f.add(field::TEAM, || {
            opt_str(self.team.as_ref().map(TeamName::as_str))
        });
        f.add(field::WORKSPACE, || {
            opt_str(req.principal.workspace.as_deref())
        });
        f.add(field::AT_CLIENT_SIDE, || Value::Bool(req.at_client_side));
        f.add(field::CLIENT_API_VERSION, || {
            req.client_api_version.map_or(Value::Null, Value::Int)
        });
        f.add(field::CLIENT_VERSION, || {
            opt_str(req.client_version.as_deref())
        });
        f.add(field::CONTROLLER, || Value::Bool(req.is_controller()));
        f.add(field::NUM_NODES, || Value::Int(i64::from(req.num_nodes)));
        f.add(field::GPUS, || {
            let gpus = alive
                .iter()
                .map(|(_, r)| self.total_gpus(r))
                .max()
                .unwrap_or(0);
            Value::Int(i64::try_from(gpus).unwrap_or(i64::MAX))
        });
        f.add(field::GPU_MODELS, || {
            let mut models: Vec<Value> = Vec::new();
            for (_, r) in &alive {
                if let Some(a) = &r.accelerator {
                    let v = string(a.model.as_str());
                    if !models.contains(&v) {
                        models.push(v);
                    }
                }
            }
            Value::List(Arc::new(models))
        });
        f.add(field::HOURLY_USD, || {
            self.worst_hourly(policy)
                .map_or(Value::Null, |u| Value::Float(u.as_dollars_f64()))
        });
        f.add(field::USE_SPOT, || {
            Value::Bool(!alive.is_empty() && alive.iter().all(|(_, r)| r.use_spot))
        });
        f.add(field::LABELS, || {
            self.labels
                .iter()
                .map(|(k, v)| (k.clone(), string(v)))
                .collect::<std::collections::HashMap<String, Value>>()
                .into()
        });
        f.add(field::AUTOSTOP, || {
            self.autostop.map_or(Value::Null, |a| {
                map(vec![
                    ("idle_minutes", Value::Int(a.idle_minutes)),
                    ("down", Value::Bool(a.down)),
                ])
            })
        });
        f.add(field::RESOURCES, || {
            Value::List(Arc::new(
                alive
                    .iter()
                    .map(|(i, r)| self.resource_value(policy, *i, r))
                    .collect(),
            ))
        });
        f.into_value()
    }
}

/// Declares the field constants of [`field`] and [`FIELD_NAMES`] from one
/// list, so an index and its name cannot drift apart.
macro_rules! cel_fields {
    ($($id:ident = $name:literal,)*) => {
        /// The fields of the CEL `request` and `resource` values, by index
        /// into [`FIELD_NAMES`]; a policy keeps a bit mask of the ones its
        /// expressions name ([`field_mask`]), so building a value tests a
        /// bit per field.
        pub(crate) mod field {
            #[allow(
                non_camel_case_types,
                clippy::upper_case_acronyms,
                dead_code,
                reason = "one variant per field, named like its constant, for its index"
            )]
            enum Index { $($id,)* }
            $(pub(crate) const $id: usize = Index::$id as usize;)*
        }

        /// Field names, indexed by the constants of [`field`].
        const FIELD_NAMES: &[&str] = &[$($name,)*];
        // A policy's fields are a `u64` bit mask.
        const _: () = assert!(FIELD_NAMES.len() <= 64);
    };
}

cel_fields! {
    ACCELERATOR = "accelerator",
    AT_CLIENT_SIDE = "at_client_side",
    AUTOSTOP = "autostop",
    CLIENT_API_VERSION = "client_api_version",
    CLIENT_VERSION = "client_version",
    CLOUD = "cloud",
    CONTROLLER = "controller",
    CPUS = "cpus",
    DISK_SIZE = "disk_size",
    DOOR = "door",
    GPU_MODELS = "gpu_models",
    GPUS = "gpus",
    HOST_ID = "host_id",
    HOURLY_USD = "hourly_usd",
    IMAGE_ID = "image_id",
    INDEX = "index",
    LABELS = "labels",
    MEMORY = "memory",
    MEMORY_GB = "memory_gb",
    NAME = "name",
    NUM_NODES = "num_nodes",
    PORTS = "ports",
    REGION = "region",
    RELIABILITY = "reliability",
    RESOURCES = "resources",
    TEAM = "team",
    TOTAL_GPUS = "total_gpus",
    USE_SPOT = "use_spot",
    USER = "user",
    VERIFIED = "verified",
    WORKSPACE = "workspace",
    ZONE = "zone",
}

/// The mask of fields named by some word of a CEL expression.
pub(crate) fn field_mask(words: &[String]) -> u64 {
    FIELD_NAMES
        .iter()
        .enumerate()
        .filter(|(_, name)| words.iter().any(|w| w == *name))
        .fold(0, |mask, (i, _)| mask | (1 << i))
}

/// Builds a CEL map with only the fields some expression of the policy
/// names: converting values into CEL costs per field, and most policies
/// read few of them.
struct Fields {
    mask: u64,
    out: Vec<(&'static str, Value)>,
}

impl Fields {
    fn new(mask: u64) -> Self {
        Self {
            mask,
            out: Vec::new(),
        }
    }

    /// Adds field `index` (a [`field`] constant) if the policy reads it.
    fn add(&mut self, index: usize, value: impl FnOnce() -> Value) {
        if self.mask >> index & 1 == 1 {
            if let Some(key) = FIELD_NAMES.get(index) {
                self.out.push((key, value()));
            }
        }
    }

    fn into_value(self) -> Value {
        map(self.out)
    }
}

impl Policy {
    /// The reason `access` when the request's subject may not do what the
    /// request does in `team` ([`LaunchRequest::access_question`]). Keys are
    /// always checked, by their role; users only when the config has
    /// `role_bindings` ([`crate::access::Access::checks_users`]).
    fn access_denial(&self, req: &LaunchRequest, team: &TeamName) -> Option<Reason> {
        let (verb, resource) = req.access_question()?;
        let p = &req.principal;
        if p.role.is_none() && !self.access.checks_users() {
            return None;
        }
        let subject = crate::access::Subject {
            user: p.user.clone(),
            groups: p.groups.clone(),
            key: p.role.map(|r| (r, team.clone())),
        };
        let review = self.access.review(&subject, verb, resource, team, None);
        (!review.allowed).then(|| Reason {
            rule: RuleName::builtin("access"),
            effect: Effect::Deny,
            message: format!(
                "{}; a platform admin grants roles with `role_bindings` (or a key with a role that may: `warden keys create --role ...`)",
                review.reason
            ),
        })
    }
}

fn rule_error(msg: String) -> Outcome {
    Outcome::Deny(format!(
        "{msg}; the request is denied because Warden fails closed"
    ))
}

impl Policy {
    /// Decides one request. Pure and deterministic.
    pub fn decide(&self, req: &LaunchRequest) -> Decision {
        let team = self.resolve_request_team(req).map(|(t, _)| t);
        let mut state = State {
            req,
            team: team.clone(),
            resources: req.resources.clone(),
            alive: vec![true; req.resources.len()],
            autostop: req.autostop,
            labels: req.labels.clone(),
            volumes: req.volumes.clone(),
            sets: Vec::new(),
        };
        let initial_hourly = state.worst_hourly(self);
        let mut reasons = Vec::new();
        let mut mutations = Vec::new();

        if team.is_none() && !req.is_controller() {
            reasons.push(Reason {
                rule: RuleName::builtin("team.resolve"),
                effect: Effect::Deny,
                message: unresolved_message(req, self.team_from_label(req.at_client_side)),
            });
        }

        if let Some(reason) = team.as_ref().and_then(|t| self.access_denial(req, t)) {
            reasons.push(reason);
        }

        let mut ctx: Option<Context<'static, 'static>> = None;
        for rule in &self.rules {
            if rule.mode == Mode::Off || (req.is_controller() && !rule.controllers) {
                continue;
            }
            if !static_match(rule, req, state.team.as_ref()) {
                continue;
            }
            let outcome = self.eval_rule(rule, &mut state, &mut ctx);
            let (effect, message, muts) = match (outcome, rule.mode) {
                (Outcome::Pass, _) => continue,
                (Outcome::Deny(m), Mode::Warn) => {
                    (Effect::Warn, format!("would deny: {m}"), Vec::new())
                }
                (Outcome::Mutate(_, m), Mode::Warn) => {
                    (Effect::Warn, format!("would change: {m}"), Vec::new())
                }
                (Outcome::Deny(m), _) => (Effect::Deny, rule.denial(m), Vec::new()),
                (Outcome::Mutate(ms, m), _) => (Effect::Mutate, m, ms),
            };
            if !muts.is_empty() {
                for m in &muts {
                    state.apply(m);
                }
                ctx = None;
            }
            mutations.extend(muts.into_iter().map(|mutation| AppliedMutation {
                rule: rule.name.clone(),
                mutation,
            }));
            reasons.push(Reason {
                rule: rule.name.clone(),
                effect,
                message,
            });
        }

        // Active exceptions lift the denials of the rules they name.
        let mut overrides = Vec::new();
        if let Some(t) = &team {
            for r in reasons.iter_mut().filter(|r| r.effect == Effect::Deny) {
                let user = req.principal.user.as_deref();
                if let Some(x) = req
                    .exceptions
                    .iter()
                    .find(|x| x.lifts(r.rule.as_str(), t, user))
                {
                    r.effect = Effect::Warn;
                    r.message = format!(
                        "lifted by exception #{} until {} ({}): {}",
                        x.id, x.until, x.reason, r.message
                    );
                    overrides.push(crate::exception::Override {
                        exception: x.id,
                        rule: r.rule.as_str().to_owned(),
                    });
                }
            }
        }

        let (verdict, hourly_usd) = if reasons.iter().any(|r| r.effect == Effect::Deny) {
            mutations.clear();
            (Verdict::Deny, initial_hourly)
        } else {
            (Verdict::Allow, state.worst_hourly(self))
        };
        Decision {
            verdict,
            team,
            reasons,
            mutations,
            hourly_usd,
            overrides,
        }
    }

    fn context(&self, state: &State<'_>) -> Context<'static, 'static> {
        let mut ctx = Context::with_env(Arc::clone(&self.env));
        if self.uses.request {
            ctx.add_variable_from_value("request", state.request_value(self));
        }
        if self.uses.task {
            ctx.add_variable_from_value("task", from_json(&state.doc(Doc::Task)));
        }
        if self.uses.config {
            ctx.add_variable_from_value("config", from_json(&state.doc(Doc::Config)));
        }
        ctx
    }

    fn eval_rule(
        &self,
        rule: &Rule,
        state: &mut State<'_>,
        ctx: &mut Option<Context<'static, 'static>>,
    ) -> Outcome {
        let m = &rule.matcher;
        let native_resource = m.resource.as_ref().and_then(Expr::native);
        let needs_ctx = m.when.is_some() || (m.resource.is_some() && native_resource.is_none());
        if needs_ctx && ctx.is_none() {
            *ctx = Some(self.context(state));
        }
        if let (Some(when), Some(c)) = (&m.when, ctx.as_ref()) {
            match when.eval_bool(c) {
                Ok(true) => {}
                Ok(false) => return Outcome::Pass,
                Err(e) => return rule_error(e),
            }
        }
        let mut selected = Vec::new();
        for (i, r) in state.alive() {
            if let Some(native) = native_resource {
                if !native.eval(state.int_field(native.field, i, r)) {
                    continue;
                }
            } else if let (Some(expr), Some(c)) = (&m.resource, ctx.as_ref()) {
                let mut inner = c.new_inner_scope();
                inner.add_variable_from_value("resource", state.resource_value(self, i, r));
                match expr.eval_bool(&inner) {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(e) => return rule_error(e),
                }
            }
            selected.push(i);
        }
        if m.resource.is_some() && selected.is_empty() {
            return Outcome::Pass;
        }
        self.act(&rule.action, state, &selected)
    }

    fn act(&self, action: &Action, s: &State<'_>, selected: &[usize]) -> Outcome {
        let sel = || {
            selected
                .iter()
                .filter_map(|i| s.resources.get(*i).map(|r| (*i, r)))
        };
        let req = s.req;
        match action {
            Action::Deny(msg) => Outcome::Deny(s.substitute(msg)),
            Action::AllowedGpus { models, prune } => {
                let bad: Vec<(usize, &Resource)> = sel()
                    .filter(|(_, r)| {
                        r.accelerator
                            .as_ref()
                            .is_some_and(|a| !models.contains(&a.model))
                    })
                    .collect();
                if bad.is_empty() {
                    return Outcome::Pass;
                }
                let allowed = models
                    .iter()
                    .map(|m| format!("`{m}`"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let (asked, models_asked) =
                    bounded_list(bad.iter().filter_map(|(_, r)| {
                        r.accelerator.as_ref().map(|a| format!("`{}`", a.model))
                    }));
                let remaining = s
                    .alive()
                    .filter(|(i, _)| !bad.iter().any(|(b, _)| b == i))
                    .count();
                if *prune && remaining > 0 {
                    return Outcome::Mutate(
                        vec![Mutation::PruneResources {
                            resources: bad.iter().map(|(i, _)| *i).collect(),
                        }],
                        format!("removed GPU candidates {asked} (allowed: {allowed})"),
                    );
                }
                let (what, are) = if models_asked == 1 {
                    ("GPU", "is")
                } else {
                    ("GPUs", "are")
                };
                Outcome::Deny(format!(
                    "{what} {asked} {are} not allowed; allowed GPU models: {allowed}. Ask for one of those"
                ))
            }
            Action::MaxGpus(limit) => {
                let worst = sel().max_by_key(|(_, r)| s.total_gpus(r));
                match worst {
                    Some((_, r)) if s.total_gpus(r) > *limit => Outcome::Deny(format!(
                        "requests {} GPUs ({}); the limit is {} per launch. Ask for at most {} (fewer per node or fewer nodes)",
                        s.total_gpus(r),
                        s.describe(r),
                        plural(*limit, "GPU"),
                        plural(*limit, "GPU")
                    )),
                    _ => Outcome::Pass,
                }
            }
            Action::MaxNodes(limit) => {
                if u64::from(req.num_nodes) > *limit {
                    Outcome::Deny(format!(
                        "requests {} nodes; the limit is {}. Set `num_nodes` to at most {limit}",
                        req.num_nodes,
                        plural(*limit, "node")
                    ))
                } else {
                    Outcome::Pass
                }
            }
            Action::MaxHourly(limit) => {
                let mut worst: Option<(Usd, &Resource)> = None;
                for (_, r) in sel() {
                    let Some(cost) = s.hourly(self, r) else {
                        let model = r.accelerator.as_ref().map_or("?", |a| a.model.as_str());
                        return Outcome::Deny(format!(
                            "cannot estimate the price of GPU `{model}`: it has no price; ask a platform admin to add `prices.{model}`"
                        ));
                    };
                    if worst.is_none_or(|(w, _)| cost > w) {
                        worst = Some((cost, r));
                    }
                }
                match worst {
                    Some((cost, r)) if cost > *limit => Outcome::Deny(format!(
                        "is estimated at {cost}/hour ({}, {}); the limit is {limit}/hour. Use fewer or cheaper GPUs{}",
                        s.describe(r),
                        if r.use_spot { "spot" } else { "on-demand" },
                        if r.use_spot { "" } else { ", or spot capacity (`use_spot: true`)" }
                    )),
                    _ => Outcome::Pass,
                }
            }
            Action::RequireAutostop => {
                if s.autostop.is_some() {
                    Outcome::Pass
                } else {
                    Outcome::Deny(
                        "autostop is not set. Set it with `sky launch -i <idle minutes>` (add `--down` to tear down), or `resources.autostop.idle_minutes` in the task"
                            .to_owned(),
                    )
                }
            }
            Action::MaxAutostop(max) => match s.autostop {
                Some(a) if a.idle_minutes <= *max => Outcome::Pass,
                Some(a) => Outcome::Mutate(
                    vec![Mutation::SetAutostop(Autostop {
                        idle_minutes: *max,
                        down: a.down,
                    })],
                    format!(
                        "lowered autostop from {} to {max} idle minutes (the maximum)",
                        a.idle_minutes
                    ),
                ),
                None => Outcome::Mutate(
                    vec![Mutation::SetAutostop(Autostop {
                        idle_minutes: *max,
                        down: false,
                    })],
                    format!(
                        "set autostop to {max} idle minutes (none was set; the maximum is {max})"
                    ),
                ),
            },
            Action::DefaultAutostop(a) => match s.autostop {
                Some(_) => Outcome::Pass,
                None => Outcome::Mutate(
                    vec![Mutation::SetAutostop(*a)],
                    format!(
                        "set autostop to {} idle minutes{} (none was set)",
                        a.idle_minutes,
                        if a.down { " with teardown" } else { "" }
                    ),
                ),
            },
            Action::UseSpot => {
                let changed: Vec<(usize, &Resource)> = sel().filter(|(_, r)| !r.use_spot).collect();
                if changed.is_empty() {
                    return Outcome::Pass;
                }
                let (what, _) = bounded_list(changed.iter().map(|(_, r)| s.describe(r)));
                Outcome::Mutate(
                    vec![Mutation::UseSpot {
                        resources: changed.iter().map(|(i, _)| *i).collect(),
                    }],
                    format!("switched {what} to spot capacity"),
                )
            }
            Action::AddLabels(labels) => {
                let mut changed = BTreeMap::new();
                for (k, v) in labels {
                    let v = s.substitute(v);
                    if s.labels.get(k) != Some(&v) {
                        changed.insert(k.clone(), v);
                    }
                }
                if changed.is_empty() {
                    return Outcome::Pass;
                }
                let what = changed
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                Outcome::Mutate(
                    vec![Mutation::AddLabels { labels: changed }],
                    format!("set labels {what}"),
                )
            }
            Action::RequireLabels(keys) => {
                let missing: Vec<String> = keys
                    .iter()
                    .filter(|k| s.labels.get(*k).is_none_or(|v| v.is_empty()))
                    .map(|k| format!("`{k}`"))
                    .collect();
                if missing.is_empty() {
                    Outcome::Pass
                } else {
                    Outcome::Deny(format!(
                        "missing required label(s) {}; add them under `resources.labels` in the task",
                        missing.join(", ")
                    ))
                }
            }
            Action::Set(list) => {
                let mut muts = Vec::new();
                let mut what = Vec::new();
                for (doc, path, value) in list {
                    let current = s.doc(*doc);
                    if get_path(&current, path) != Some(value) {
                        what.push(format!("{}.{} = {value}", doc_name(*doc), path.join(".")));
                        muts.push(Mutation::SetPath {
                            doc: *doc,
                            path: path.clone(),
                            value: value.clone(),
                        });
                    }
                }
                if muts.is_empty() {
                    Outcome::Pass
                } else {
                    Outcome::Mutate(muts, format!("set {}", what.join(", ")))
                }
            }
            Action::RequirePaths(list) => {
                let mut missing = Vec::new();
                for (doc, path) in list {
                    let current = s.doc(*doc);
                    if get_path(&current, path).is_none_or(serde_json::Value::is_null) {
                        missing.push(format!("`{}.{}`", doc_name(*doc), path.join(".")));
                    }
                }
                if missing.is_empty() {
                    Outcome::Pass
                } else {
                    Outcome::Deny(format!("{} must be set", missing.join(", ")))
                }
            }
            Action::AddVolumes(vols) => {
                let changed: BTreeMap<String, serde_json::Value> = vols
                    .iter()
                    .filter(|(k, v)| s.volumes.get(*k) != Some(*v))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                if changed.is_empty() {
                    return Outcome::Pass;
                }
                let what = changed
                    .iter()
                    .map(|(k, v)| format!("{k} ← {v}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                Outcome::Mutate(
                    vec![Mutation::AddVolumes { volumes: changed }],
                    format!("added volumes {what}"),
                )
            }
            Action::SetResource(fields) => {
                let mut muts = Vec::new();
                let mut what = Vec::new();
                for (field, value) in fields {
                    let idx: Vec<usize> = sel()
                        .filter(|(_, r)| {
                            let cur = match field {
                                ResourceField::Cloud => {
                                    r.cloud.clone().map(serde_json::Value::String)
                                }
                                ResourceField::Region => {
                                    r.region.clone().map(serde_json::Value::String)
                                }
                                ResourceField::Zone => {
                                    r.zone.clone().map(serde_json::Value::String)
                                }
                                ResourceField::ImageId => {
                                    r.image_id.clone().map(serde_json::Value::String)
                                }
                                ResourceField::DiskSize => r.disk_size.map(serde_json::Value::from),
                            };
                            cur.as_ref() != Some(value)
                        })
                        .map(|(i, _)| i)
                        .collect();
                    if !idx.is_empty() {
                        what.push(format!("{} = {value}", field.as_str()));
                        muts.push(Mutation::SetResource {
                            resources: idx,
                            field: *field,
                            value: value.clone(),
                        });
                    }
                }
                if muts.is_empty() {
                    Outcome::Pass
                } else {
                    Outcome::Mutate(muts, format!("set {}", what.join(", ")))
                }
            }
            Action::MinClientApiVersion { version, unknown } => {
                if req.at_client_side {
                    return Outcome::Pass;
                }
                let yours = req.client_version.as_deref().unwrap_or("unknown");
                match req.client_api_version {
                    Some(v) if v >= *version => Outcome::Pass,
                    Some(v) => Outcome::Deny(format!(
                        "client API version {v} is below the minimum {version}; upgrade SkyPilot (`pip install -U skypilot`); your client version: {yours}"
                    )),
                    None if *unknown == UnknownVersion::Allow => Outcome::Pass,
                    None => Outcome::Deny(format!(
                        "the client sent no API version (minimum {version}); upgrade SkyPilot to a recent version"
                    )),
                }
            }
            Action::AllowedClouds(clouds) => check_allowed(
                sel(),
                clouds,
                "cloud",
                "infra",
                |r| r.cloud.as_deref(),
                |c, a| a == c,
            ),
            Action::AllowedRegions(regions) => check_allowed(
                sel(),
                regions,
                "region",
                "infra",
                |r| r.region.as_deref(),
                |c, a| a == c,
            ),
            Action::MinReliability(min) => {
                for (_, r) in sel() {
                    let facts = r.host.as_ref();
                    let reliability = facts.and_then(|h| h.reliability);
                    if !reliability.is_some_and(|x| x >= *min) {
                        return Outcome::Deny(format!(
                            "runs on {} whose reliability is {}; the minimum is {min}. Pick a more reliable host (at the Vast door `vastai search offers` shows only those)",
                            host_name(facts),
                            reliability.map_or("unknown".to_owned(), |x| x.to_string())
                        ));
                    }
                }
                Outcome::Pass
            }
            Action::VerifiedOnly => {
                for (_, r) in sel() {
                    let facts = r.host.as_ref();
                    if facts.and_then(|h| h.verified) != Some(true) {
                        let state = match facts.and_then(|h| h.verified) {
                            Some(false) => "is not verified",
                            _ => "is not known to be verified",
                        };
                        return Outcome::Deny(format!(
                            "runs on {} that {state}; the team rents from verified hosts only. Pick an offer of a verified host",
                            host_name(facts)
                        ));
                    }
                }
                Outcome::Pass
            }
            Action::AllowedImages(prefixes) => {
                for (_, r) in sel() {
                    if let Some(img) = &r.image_id {
                        if !prefixes.iter().any(|p| img.starts_with(p.as_str())) {
                            let list = prefixes
                                .iter()
                                .map(|p| format!("`{p}`"))
                                .collect::<Vec<_>>()
                                .join(", ");
                            return Outcome::Deny(format!(
                                "image `{img}` is not allowed; use an image starting with {list}"
                            ));
                        }
                    }
                }
                Outcome::Pass
            }
        }
    }
}

fn check_allowed<'a>(
    resources: impl Iterator<Item = (usize, &'a Resource)>,
    allowed: &[String],
    what: &str,
    key: &str,
    get: impl Fn(&Resource) -> Option<&str>,
    eq: impl Fn(&str, &str) -> bool,
) -> Outcome {
    let list = allowed
        .iter()
        .map(|c| format!("`{c}`"))
        .collect::<Vec<_>>()
        .join(", ");
    for (_, r) in resources {
        match get(r) {
            None => {
                return Outcome::Deny(format!(
                    "the request does not name a {what}, so it could run anywhere; set `{key}` to one of {list}"
                ))
            }
            Some(v) if !allowed.iter().any(|a| eq(v, a)) => {
                return Outcome::Deny(format!("{what} `{v}` is not allowed; use one of {list}"))
            }
            Some(_) => {}
        }
    }
    Outcome::Pass
}

/// How many items a reason names before it counts the rest.
const LISTED: usize = 5;

/// `items` joined with `, `, each named once (in first-seen order) and at
/// most [`LISTED`] of them, then `and N more`; with the number of distinct
/// items. A reason stays short however many candidates a request offers
/// (a task may list thousands of `any_of` alternatives).
fn bounded_list(items: impl IntoIterator<Item = String>) -> (String, usize) {
    let mut seen = std::collections::HashSet::new();
    let mut shown: Vec<String> = Vec::new();
    for item in items {
        if seen.contains(&item) {
            continue;
        }
        if shown.len() < LISTED {
            shown.push(item.clone());
        }
        seen.insert(item);
    }
    let mut text = shown.join(", ");
    if seen.len() > shown.len() {
        text.push_str(&format!(" and {} more", seen.len() - shown.len()));
    }
    (text, seen.len())
}

/// `host 123` or `a host`, for messages.
fn host_name(facts: Option<&crate::request::HostFacts>) -> String {
    match facts.and_then(|h| h.host_id.as_deref()) {
        Some(id) => format!("host {id}"),
        None => "a host".to_owned(),
    }
}

fn plural(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

fn doc_name(doc: Doc) -> &'static str {
    match doc {
        Doc::Task => "task",
        Doc::Config => "config",
    }
}

fn static_match(rule: &Rule, req: &LaunchRequest, team: Option<&TeamName>) -> bool {
    let m = &rule.matcher;
    if let Some(teams) = &m.teams {
        if !team.is_some_and(|t| teams.contains(t)) {
            return false;
        }
    }
    if let Some(users) = &m.users {
        if !req
            .principal
            .user
            .as_ref()
            .is_some_and(|u| users.contains(u))
        {
            return false;
        }
    }
    if let Some(reqs) = &m.requests {
        if !reqs.iter().any(|p| p.matches(&req.request_name)) {
            return false;
        }
    }
    if let Some(doors) = &m.doors {
        if !doors.contains(&req.door) {
            return false;
        }
    }
    true
}

fn unresolved_message(req: &LaunchRequest, by_label: bool) -> String {
    let who = match &req.principal.user {
        Some(u) => format!("user `{u}`"),
        None => "this request (no user name is known on the client side)".to_owned(),
    };
    let ws = match &req.principal.workspace {
        Some(w) => format!("workspace `{w}`"),
        None => "no workspace".to_owned(),
    };
    let label = match (by_label, req.at_client_side) {
        (true, _) => "no `team` label of a known team",
        (false, false) => "a `team` label does not choose the team of a server-side request",
        (false, true) => "a `team` label does not choose the team",
    };
    format!(
        "{who} is not in any team ({ws}; {label}). Ask a platform admin to add you to a team in Warden's config (`teams.<team>.users`), or run in a team's workspace (`active_workspace`)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{Accelerator, Door};
    use crate::GpuModel;

    fn gpu(model: &str, count: u32) -> Resource {
        Resource {
            accelerator: Some(Accelerator {
                model: GpuModel::parse(model).unwrap(),
                count,
            }),
            ..Resource::default()
        }
    }

    /// Candidates H100:8, A100:1 (port 22 open) and a CPU-only one; labels
    /// `team: ml`, `project: alpha`.
    fn request() -> LaunchRequest {
        let mut req = LaunchRequest::new(Door::Skypilot, "launch");
        let mut a100 = gpu("A100", 1);
        a100.ports = vec!["22".to_owned()];
        req.resources = vec![gpu("H100", 8), a100, Resource::default()];
        req.labels = [("team", "ml"), ("project", "alpha")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        req
    }

    /// Whether a `deny` rule matched by `key: cond` fires on [`request`].
    fn fires(key: &str, cond: &str) -> bool {
        let yaml = format!(
            "default_team: t\nteams: {{t: {{}}}}\nrules:\n  - name: hit\n    match: {{{key}: {}}}\n    deny: hit\n",
            serde_json::to_string(cond).unwrap()
        );
        let policy = Policy::from_yaml(&yaml).unwrap_or_else(|e| panic!("{cond}: {e}"));
        let d = policy.decide(&request());
        assert!(
            d.reasons.iter().all(|r| r.message == "hit"),
            "{cond}: {:?}",
            d.reasons
        );
        !d.is_allowed()
    }

    #[test]
    fn comprehension_macros_evaluate_over_the_request() {
        for (cond, want) in [
            (r#"request.gpu_models.exists(m, m == "H100")"#, true),
            (r#"request.gpu_models.exists(m, m == "T4")"#, false),
            (r#"request.gpu_models.all(m, m in ["H100", "A100"])"#, true),
            (r#"request.gpu_models.all(m, m == "H100")"#, false),
            ("request.resources.exists(r, r.gpus >= 8)", true),
            ("request.resources.all(r, r.gpus > 0)", false),
            ("request.resources.exists_one(r, r.gpus == 0)", true),
            ("request.resources.exists_one(r, r.gpus > 0)", false),
            ("request.resources.map(r, r.gpus).exists(g, g == 8)", true),
            ("request.resources.map(r, r.gpus > 0, r.gpus) == [8, 1]", true),
            ("size(request.resources.filter(r, r.gpus > 0)) == 2", true),
            ("size(request.resources.filter(r, r.gpus > 8)) == 0", true),
            (r#"request.labels.exists(k, k == "team")"#, true),
            (r#"request.labels.exists(k, k == "owner")"#, false),
            (r#"request.labels.all(k, request.labels[k] != "")"#, true),
            (r#"request.labels.filter(k, k.startsWith("p")) == ["project"]"#, true),
            (
                "request.resources.exists(r, request.gpu_models.exists(m, m == r.accelerator))",
                true,
            ),
            (
                "request.resources.all(r, r.ports.all(p, request.resources.exists(s, s.index != r.index)))",
                true,
            ),
            (
                r#"request.gpu_models.exists(m, m == "A100") && request.gpu_models.all(m, m != "T4")"#,
                true,
            ),
            ("request.resources.exists(resource, resource.gpus == 1)", true),
        ] {
            assert_eq!(fires("when", cond), want, "{cond}");
        }
        assert!(fires("resource", r#"resource.ports.exists(p, p == "22")"#));
        assert!(!fires("resource", r#"resource.ports.exists(p, p == "80")"#));
    }

    /// An error inside a macro fails closed like any other.
    #[test]
    fn an_error_inside_a_macro_fails_closed() {
        let policy = Policy::from_yaml(
            "default_team: t\nteams: {t: {}}\nrules:\n  - {name: r, match: {when: 'request.resources.all(r, r.nope > 0)'}, use_spot: true}\n",
        )
        .unwrap();
        let d = policy.decide(&request());
        assert_eq!(d.denied_by()[0].as_str(), "r");
        assert!(
            d.reasons[0].message.contains("fails closed"),
            "{:?}",
            d.reasons
        );
    }

    fn policy(yaml: &str) -> Policy {
        Policy::from_yaml(yaml).unwrap_or_else(|e| panic!("{e}"))
    }

    /// 10,000 candidates of two disallowed models (and one allowed one).
    fn many_candidates() -> LaunchRequest {
        let mut req = LaunchRequest::new(Door::Skypilot, "launch");
        req.resources = (0..10_000)
            .map(|i| gpu(if i % 2 == 0 { "V100" } else { "T4" }, 1 + i % 8))
            .chain([gpu("H100", 8)])
            .collect();
        req
    }

    /// The start of a message that may be long.
    fn preview(msg: &str) -> &str {
        msg.get(..300).unwrap_or(msg)
    }

    #[test]
    fn a_denial_names_each_disallowed_model_once() {
        let p = policy("default_team: ml\nteams:\n  ml: {allowed_gpus: [H100]}\n");
        let msg = p.decide(&many_candidates()).denial_message();
        assert_eq!(msg.matches("`V100`").count(), 1, "{}", preview(&msg));
        assert_eq!(msg.matches("`T4`").count(), 1, "{}", preview(&msg));
        assert!(
            msg.contains("GPUs `V100`, `T4` are not allowed"),
            "{}",
            preview(&msg)
        );
        assert!(msg.len() < 400, "{} bytes: {}", msg.len(), preview(&msg));

        // One model keeps the singular the users know.
        let mut req = LaunchRequest::new(Door::Skypilot, "launch");
        req.resources = vec![gpu("T4", 1), gpu("T4", 2)];
        let msg = p.decide(&req).denial_message();
        assert!(msg.contains("GPU `T4` is not allowed"), "{}", preview(&msg));

        // Many distinct models: the first few, then how many more.
        let mut req = LaunchRequest::new(Door::Skypilot, "launch");
        req.resources = (0..2_000)
            .map(|i| gpu(&format!("GPU{}", i % 40), 1))
            .collect();
        let msg = p.decide(&req).denial_message();
        assert!(
            msg.contains("GPUs `GPU0`, `GPU1`, `GPU2`, `GPU3`, `GPU4` and 35 more are not allowed"),
            "{}",
            preview(&msg)
        );
        assert!(!msg.contains("`GPU5`"), "{}", preview(&msg));
        assert!(msg.len() < 400, "{} bytes: {}", msg.len(), preview(&msg));
    }

    /// Pruning and spot switching over many candidates also say each thing
    /// once, in a bounded reason.
    #[test]
    fn mutation_reasons_are_bounded_too() {
        let p = policy(
            "default_team: ml\nteams:\n  ml: {allowed_gpus: [H100], prune_disallowed_gpus: true}\nrules:\n  - {name: spot, use_spot: true}\n",
        );
        let d = p.decide(&many_candidates());
        assert!(d.is_allowed(), "{}", d.denial_message());
        for r in &d.reasons {
            assert!(
                r.message.len() < 400,
                "{}: {} bytes",
                r.rule,
                r.message.len()
            );
        }
        let pruned = &d.reasons[0].message;
        assert_eq!(pruned.matches("`V100`").count(), 1, "{}", preview(pruned));
        let p =
            policy("default_team: ml\nteams: {ml: {}}\nrules:\n  - {name: spot, use_spot: true}\n");
        let d = p.decide(&many_candidates());
        let spot = &d.reasons[0].message;
        assert!(spot.contains("V100:1"), "{}", preview(spot));
        assert!(spot.contains(" more to spot capacity"), "{}", preview(spot));
        assert!(spot.len() < 400, "{} bytes: {}", spot.len(), preview(spot));
    }

    /// The rule's `message` (written by an admin) follows the built-in
    /// reason on its own labelled line; the `[rule]` prefix is unchanged.
    #[test]
    fn the_admin_message_is_set_apart_from_the_reason() {
        let p = policy(
            "default_team: ml\nteams:\n  ml: {max_nodes: 2}\nrules:\n  - name: vpc\n    require_paths: [config.aws.vpc_names]\n    message: \"See the wiki.\\nAsk #infra.\"\n",
        );
        let mut req = LaunchRequest::new(Door::Skypilot, "launch");
        req.num_nodes = 3;
        let d = p.decide(&req);
        assert_eq!(
            d.reasons[1].message,
            "`config.aws.vpc_names` must be set\nAdmin note: See the wiki.\nAsk #infra."
        );
        assert_eq!(
            d.denial_message(),
            "Warden denied this request (team `ml`):\n  \
             - [team.max_nodes] requests 3 nodes; the limit is 2 nodes. Set `num_nodes` to at most 2 \
             (or ask a platform admin to change `teams.ml.max_nodes`)\n  \
             - [vpc] `config.aws.vpc_names` must be set\n    \
             Admin note: See the wiki.\n    \
             Ask #infra."
        );
    }
}

#[cfg(test)]
mod host_fact_tests {
    use crate::request::{Accelerator, HostFacts};
    use crate::{Door, GpuModel, LaunchRequest, Policy, Resource};

    /// A one-GPU Vast rental on a host with these facts.
    fn rental(team: &str, host: Option<HostFacts>) -> LaunchRequest {
        let mut req = LaunchRequest::new(Door::Vast, "launch");
        req.principal.team = Some(team.to_owned());
        req.resources = vec![Resource {
            accelerator: Some(Accelerator {
                model: GpuModel::parse("RTX_4090").unwrap(),
                count: 1,
            }),
            host,
            ..Resource::default()
        }];
        req
    }

    fn facts(reliability: Option<f64>, verified: Option<bool>) -> Option<HostFacts> {
        Some(HostFacts {
            reliability,
            verified,
            host_id: Some("4711".to_owned()),
        })
    }

    #[test]
    fn team_vast_options_judge_the_host_in_the_core() {
        let policy = Policy::from_yaml(
            "teams:\n  sure: {vast: {min_reliability: 0.95, verified_only: true}}\n  any: {}\n",
        )
        .unwrap();
        let d = policy.decide(&rental("sure", facts(Some(0.99), Some(true))));
        assert!(d.is_allowed(), "{:?}", d.reasons);
        let d = policy.decide(&rental("sure", facts(Some(0.9), Some(true))));
        assert_eq!(
            d.denied_by().iter().map(|r| r.as_str()).collect::<Vec<_>>(),
            ["team.vast.min_reliability"]
        );
        let text = d.denial_message();
        assert!(
            text.contains("host 4711 whose reliability is 0.9; the minimum is 0.95")
                && text.contains("`teams.sure.vast.min_reliability`"),
            "{text}"
        );
        let d = policy.decide(&rental("sure", facts(Some(0.99), Some(false))));
        assert_eq!(
            d.denied_by().iter().map(|r| r.as_str()).collect::<Vec<_>>(),
            ["team.vast.verified_only"]
        );
        // Unknown facts are not good enough (fail closed).
        let d = policy.decide(&rental("sure", None));
        assert_eq!(d.denied_by().len(), 2, "{:?}", d.reasons);
        // Another team, or another door, is not judged by these options.
        assert!(policy
            .decide(&rental("any", facts(Some(0.1), Some(false))))
            .is_allowed());
        let mut sky = rental("sure", None);
        sky.door = Door::Skypilot;
        assert!(policy.decide(&sky).is_allowed());
    }

    #[test]
    fn cel_reads_the_host_facts() {
        let policy = Policy::from_yaml(
            r#"
teams: {ml: {}}
rules:
  - name: reliable-hosts
    match: {doors: [vast], resource: 'resource.reliability < 0.99 || !resource.verified || resource.host_id == "13"'}
    deny: host not trusted
"#,
        )
        .unwrap();
        assert!(policy
            .decide(&rental("ml", facts(Some(0.995), Some(true))))
            .is_allowed());
        for bad in [
            facts(Some(0.98), Some(true)),
            facts(Some(0.995), Some(false)),
        ] {
            let d = policy.decide(&rental("ml", bad));
            assert_eq!(
                d.denied_by().iter().map(|r| r.as_str()).collect::<Vec<_>>(),
                ["reliable-hosts"]
            );
        }
        let mut on_13 = facts(Some(0.995), Some(true));
        if let Some(h) = on_13.as_mut() {
            h.host_id = Some("13".to_owned());
        }
        assert!(!policy.decide(&rental("ml", on_13)).is_allowed());
    }
}
