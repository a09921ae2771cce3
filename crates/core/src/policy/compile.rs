//! The policy compiler: [`Policy::from_yaml`] and [`Policy::compile`]
//! turn the file as written into a [`Policy`], validating teams, team
//! limits, quotas, budgets, prices, matchers and rules on the way. Every
//! problem is collected with its key path, so one load reports them all.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::access::{Member, TeamScope};
use crate::decision::{Doc, ResourceField};
use crate::error::{PolicyError, PolicyProblem};
use crate::expr::{Expr, Uses, REQUEST_VARS, RESOURCE_VARS};
use crate::ids::{GpuModel, RuleName, TeamName};
use crate::money::Usd;
use crate::price::{GpuPrice, PriceTable};
use crate::request::{Autostop, Door};
use crate::yaml_depth::{check_depth, MAX_CONFIG_DEPTH};

use super::compiled::{Action, Budgets, Matcher, NamePattern, Policy, Quotas, Rule, Team};
use super::spec::{
    AllowedGpusSpec, BudgetSpec, MatchSpec, MinVersionSpec, PolicySpec, QuotaSpec, RuleSpec,
    TeamSpec, UnknownVersion, DEFAULT_ALERT_PERCENT, DEFAULT_LAUNCH_WINDOW_MINUTES,
};

struct Problems(Vec<PolicyProblem>);

impl Problems {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(PolicyProblem {
            path: path.into(),
            message: message.into(),
        });
    }
}

fn parse_doc_path(raw: &str) -> Result<(Doc, Vec<String>), String> {
    let (doc, rest) = if let Some(rest) = raw.strip_prefix("config.") {
        (Doc::Config, rest)
    } else if let Some(rest) = raw.strip_prefix("task.") {
        (Doc::Task, rest)
    } else {
        return Err(format!(
            "path `{raw}` must start with `config.` (the client config) or `task.` (the task)"
        ));
    };
    let keys: Vec<String> = rest.split('.').map(str::to_owned).collect();
    if keys.iter().any(String::is_empty) {
        return Err(format!("path `{raw}` has an empty key"));
    }
    Ok((doc, keys))
}

fn dollars(p: &mut Problems, path: String, v: f64) -> Usd {
    Usd::from_dollars(v).unwrap_or_else(|e| {
        p.add(path, e.to_string());
        Usd::ZERO
    })
}

fn gpu_models(p: &mut Problems, path: &str, names: &[String]) -> Vec<GpuModel> {
    let mut out = Vec::new();
    for (i, n) in names.iter().enumerate() {
        match GpuModel::parse(n) {
            Ok(m) => out.push(m),
            Err(e) => p.add(format!("{path}[{i}]"), e.to_string()),
        }
    }
    out
}

impl Policy {
    /// Parses and validates a policy from YAML text. Text nested deeper
    /// than [`MAX_CONFIG_DEPTH`] is refused before it is parsed.
    pub fn from_yaml(text: &str) -> Result<Self, PolicyError> {
        check_depth(text, MAX_CONFIG_DEPTH).map_err(|e| PolicyError::one("", e.to_string()))?;
        let de = serde_norway::Deserializer::from_str(text);
        let spec: PolicySpec = match serde_path_to_error::deserialize(de) {
            Ok(spec) => spec,
            Err(e) => {
                let path = e.path().to_string();
                let path = if path == "." { String::new() } else { path };
                return Err(PolicyError::one(path, e.into_inner().to_string()));
            }
        };
        Self::compile(spec)
    }

    /// Validates a parsed spec; reports every problem found.
    pub fn compile(spec: PolicySpec) -> Result<Self, PolicyError> {
        let mut p = Problems(Vec::new());
        let mut teams = Vec::new();
        let mut by_name = HashMap::new();
        let mut by_user: HashMap<String, usize> = HashMap::new();
        let mut by_workspace: HashMap<String, usize> = HashMap::new();
        let mut by_namespace: HashMap<String, usize> = HashMap::new();
        let mut rules = Vec::new();

        for (raw_name, t) in &spec.teams {
            let path = format!("teams.{raw_name}");
            let name = match TeamName::parse(raw_name) {
                Ok(n) => n,
                Err(e) => {
                    p.add(path, e.to_string());
                    continue;
                }
            };
            let idx = teams.len();
            for u in &t.users {
                if let Some(prev) = by_user.insert(u.clone(), idx) {
                    let other = teams.get(prev).map_or("?", |t: &Team| t.name.as_str());
                    p.add(
                        format!("{path}.users"),
                        format!(
                            "user `{u}` is already in team `{other}`; a user belongs to one team"
                        ),
                    );
                }
            }
            for w in &t.workspaces {
                if let Some(prev) = by_workspace.insert(w.clone(), idx) {
                    let other = teams.get(prev).map_or("?", |t: &Team| t.name.as_str());
                    p.add(
                        format!("{path}.workspaces"),
                        format!("workspace `{w}` already belongs to team `{other}`"),
                    );
                }
            }
            by_name.insert(name.clone(), idx);
            rules.extend(team_rules(&mut p, &path, &name, t));
            let quotas = compile_quotas(&mut p, &path, t.quotas.as_ref());
            let budgets = compile_budgets(&mut p, &path, t.budgets.as_ref());
            let (vast, problems) = crate::vast::compile(&path, t.vast.as_ref());
            problems.into_iter().for_each(|(at, msg)| p.add(at, msg));
            let (kubernetes, problems) =
                crate::kubernetes::compile(&path, name.as_str(), t.kubernetes.as_ref());
            problems.into_iter().for_each(|(at, msg)| p.add(at, msg));
            if let Some(ns) = &kubernetes.namespace {
                if let Some(prev) = by_namespace.insert(ns.clone(), idx) {
                    let other = teams.get(prev).map_or("?", |t: &Team| t.name.as_str());
                    p.add(
                        format!("{path}.kubernetes.namespace"),
                        format!(
                            "namespace `{ns}` already belongs to team `{other}`; give each \
                             team its own (`teams.<t>.kubernetes.namespace`)"
                        ),
                    );
                }
            }
            teams.push(Team {
                name,
                users: t.users.clone(),
                workspaces: t.workspaces.clone(),
                quotas,
                budgets,
                vast,
                kubernetes,
            });
        }

        let default_team = match &spec.default_team {
            None => None,
            Some(d) => {
                let found = TeamName::parse(d)
                    .ok()
                    .and_then(|n| by_name.get(&n).copied());
                if found.is_none() {
                    p.add(
                        "default_team",
                        format!("team `{d}` is not defined under `teams`"),
                    );
                }
                found
            }
        };

        let mut prices = PriceTable::with_defaults();
        for (model, price) in &spec.prices {
            let path = format!("prices.{model}");
            let Ok(gpu) = GpuModel::parse(model).map_err(|e| p.add(path.clone(), e.to_string()))
            else {
                continue;
            };
            let on_demand = dollars(&mut p, format!("{path}.on_demand"), price.on_demand);
            let spot = match price.spot {
                Some(s) => dollars(&mut p, format!("{path}.spot"), s),
                None => on_demand,
            };
            prices.set(gpu, GpuPrice { on_demand, spot });
        }

        let mut seen: HashMap<String, usize> = HashMap::new();
        for (i, r) in spec.rules.iter().enumerate() {
            let path = format!("rules[{i}]");
            if let Some(prev) = seen.insert(r.name.clone(), i) {
                p.add(
                    format!("{path}.name"),
                    format!("rule name `{}` is already used by rules[{prev}]", r.name),
                );
            }
            if let Some(rule) = compile_rule(&mut p, &path, r, &by_name) {
                rules.push(rule);
            }
        }

        let (binding_list, problems) =
            crate::access::compile(&spec.role_bindings, |t| by_name.contains_key(t));
        let bindings = crate::access::Access::new(binding_list, HashMap::new());
        problems.into_iter().for_each(|(at, msg)| p.add(at, msg));

        if !p.0.is_empty() {
            return Err(PolicyError { problems: p.0 });
        }
        let mut uses = Uses::default();
        let mut cel_words = Vec::new();
        for r in &rules {
            for e in [&r.matcher.when, &r.matcher.resource].into_iter().flatten() {
                uses = uses.or(e.uses());
                cel_words.extend(
                    e.source()
                        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .filter(|w| !w.is_empty())
                        .map(str::to_owned),
                );
            }
            let config_path = match &r.action {
                Action::Set(list) => list.iter().any(|(d, _, _)| *d == Doc::Config),
                Action::RequirePaths(list) => list.iter().any(|(d, _)| *d == Doc::Config),
                _ => false,
            };
            uses.config |= config_path;
            uses.task |= match &r.action {
                Action::Set(list) => list.iter().any(|(d, _, _)| *d == Doc::Task),
                Action::RequirePaths(list) => list.iter().any(|(d, _)| *d == Doc::Task),
                _ => false,
            };
        }
        let cel_fields = crate::eval::field_mask(&cel_words);
        let members = by_user
            .iter()
            .filter_map(|(u, &i)| Some((u.clone(), teams.get(i)?.name.clone())))
            .collect();
        // A user listed in no team's `users` but bound by name in exactly
        // one team (`{user: fay, role: viewer, team: ml}`) is in that team.
        let mut bound: HashMap<String, Vec<usize>> = HashMap::new();
        for b in bindings.bindings() {
            if let (Member::User(u), TeamScope::One(t)) = (&b.member, &b.scope) {
                if let Some(&i) = by_name.get(t) {
                    let at = bound.entry(u.clone()).or_default();
                    if !at.contains(&i) {
                        at.push(i);
                    }
                }
            }
        }
        for (user, at) in bound {
            if let ([i], false) = (at.as_slice(), by_user.contains_key(&user)) {
                by_user.insert(user, *i);
            }
        }
        Ok(Self {
            teams,
            by_name,
            by_user,
            by_workspace,
            by_namespace,
            default_team,
            team_from_label: spec.team_from_label,
            skypilot_user_claim: spec.skypilot_user_claim,
            prices,
            rules,
            env: Arc::new(cel::Env::stdlib()),
            uses,
            cel_fields,
            access: bindings.with_members(members),
        })
    }
}

fn compile_budgets(p: &mut Problems, path: &str, b: Option<&BudgetSpec>) -> Budgets {
    let Some(b) = b else {
        return Budgets::default();
    };
    let hours = b.reservation_hours.unwrap_or(1.0);
    if !(hours.is_finite() && (0.0..=744.0).contains(&hours)) {
        p.add(
            format!("{path}.budgets.reservation_hours"),
            "must be a number of hours from 0 to 744",
        );
    }
    Budgets {
        daily: b
            .daily_usd
            .map(|v| dollars(p, format!("{path}.budgets.daily_usd"), v)),
        monthly: b
            .monthly_usd
            .map(|v| dollars(p, format!("{path}.budgets.monthly_usd"), v)),
        reservation_secs: (hours.clamp(0.0, 744.0) * 3600.0).round() as u64,
        mode: b.mode.unwrap_or_default(),
        alert_percent: alert_percent(p, path, b.alert_percent.as_deref()),
    }
}

fn alert_percent(p: &mut Problems, path: &str, given: Option<&[u32]>) -> Vec<u32> {
    let Some(given) = given else {
        return DEFAULT_ALERT_PERCENT.to_vec();
    };
    let mut out = Vec::with_capacity(given.len());
    for &v in given {
        if (1..=1000).contains(&v) {
            out.push(v);
        } else {
            p.add(
                format!("{path}.budgets.alert_percent"),
                format!("`{v}` is not a percentage from 1 to 1000"),
            );
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

fn compile_quotas(p: &mut Problems, path: &str, q: Option<&QuotaSpec>) -> Quotas {
    let Some(q) = q else {
        return Quotas::default();
    };
    let models = |p: &mut Problems, key: &str, given: &BTreeMap<String, u64>| {
        let mut out = Vec::new();
        for (model, max) in given {
            match GpuModel::parse(model) {
                Ok(m) => out.push((m, *max)),
                Err(e) => p.add(format!("{path}.quotas.{key}.{model}"), e.to_string()),
            }
        }
        out
    };
    let by_model = models(p, "max_gpus_by_model", &q.max_gpus_by_model);
    let user = q.per_user.clone().unwrap_or_default();
    if user.max_live.is_some() && q.max_live_per_user.is_some() {
        p.add(
            format!("{path}.quotas.per_user.max_live"),
            "also given as `max_live_per_user`; keep one",
        );
    }
    Quotas {
        max_gpus: q.max_gpus,
        max_gpus_by_model: by_model,
        max_live: q.max_live,
        max_live_per_user: q.max_live_per_user.or(user.max_live),
        user_max_gpus: user.max_gpus,
        user_max_gpus_by_model: models(p, "per_user.max_gpus_by_model", &user.max_gpus_by_model),
        user_max_live_hourly: user
            .max_live_hourly_usd
            .map(|v| dollars(p, format!("{path}.quotas.per_user.max_live_hourly_usd"), v)),
        max_live_hourly: q
            .max_live_hourly_usd
            .map(|v| dollars(p, format!("{path}.quotas.max_live_hourly_usd"), v)),
        max_launches_per_user: launches(p, path, "max_launches_per_user", q.max_launches_per_user),
        max_launches_per_team: launches(p, path, "max_launches_per_team", q.max_launches_per_team),
        launch_window_secs: {
            let m = q
                .launch_window_minutes
                .unwrap_or(DEFAULT_LAUNCH_WINDOW_MINUTES);
            if !(1..=44_640).contains(&m) {
                p.add(
                    format!("{path}.quotas.launch_window_minutes"),
                    format!("`{m}` is out of range; use 1 to 44640 minutes (31 days)"),
                );
            }
            m.clamp(1, 44_640) * 60
        },
    }
}

fn launches(p: &mut Problems, path: &str, key: &str, v: Option<u64>) -> Option<u64> {
    if let Some(n) = v {
        if !(1..=1_000_000).contains(&n) {
            p.add(
                format!("{path}.quotas.{key}"),
                format!("`{n}` is out of range; use 1 to 1000000 launches per window"),
            );
        }
    }
    v
}

fn team_rules(p: &mut Problems, path: &str, name: &TeamName, t: &TeamSpec) -> Vec<Rule> {
    let mut out = Vec::new();
    let mut push = |rule: &'static str, key: &str, action: Action| {
        out.push(Rule {
            name: RuleName::builtin(rule),
            mode: t.mode,
            controllers: false,
            hint: Some(format!(
                "(or ask a platform admin to change `teams.{name}.{key}`)"
            )),
            note: None,
            matcher: Matcher {
                teams: Some(vec![name.clone()]),
                ..Matcher::default()
            },
            action,
        });
    };
    if let Some(models) = &t.allowed_gpus {
        let models = gpu_models(p, &format!("{path}.allowed_gpus"), models);
        push(
            "team.allowed_gpus",
            "allowed_gpus",
            Action::AllowedGpus {
                models,
                prune: t.prune_disallowed_gpus,
            },
        );
    }
    if let Some(n) = t.max_gpus_per_launch {
        push(
            "team.max_gpus_per_launch",
            "max_gpus_per_launch",
            Action::MaxGpus(n),
        );
    }
    if let Some(n) = t.max_nodes {
        push("team.max_nodes", "max_nodes", Action::MaxNodes(n));
    }
    if let Some(usd) = t.max_hourly_usd {
        let usd = dollars(p, format!("{path}.max_hourly_usd"), usd);
        push(
            "team.max_hourly_usd",
            "max_hourly_usd",
            Action::MaxHourly(usd),
        );
    }
    // The team's marketplace options judge the host facts the Vast door
    // fills in; they hold at that door only.
    let vast_rule = |rule: &'static str, key: &str, action: Action| Rule {
        name: RuleName::builtin(rule),
        mode: t.mode,
        controllers: false,
        hint: Some(format!(
            "(or ask a platform admin to change `teams.{name}.vast.{key}`)"
        )),
        note: None,
        matcher: Matcher {
            teams: Some(vec![name.clone()]),
            doors: Some(vec![Door::Vast]),
            ..Matcher::default()
        },
        action,
    };
    if let Some(vast) = &t.vast {
        if let Some(min) = vast.min_reliability.filter(|r| r.is_finite()) {
            out.push(vast_rule(
                "team.vast.min_reliability",
                "min_reliability",
                Action::MinReliability(min),
            ));
        }
        if vast.verified_only {
            out.push(vast_rule(
                "team.vast.verified_only",
                "verified_only",
                Action::VerifiedOnly,
            ));
        }
    }
    out
}

fn compile_matcher(
    p: &mut Problems,
    path: &str,
    m: &MatchSpec,
    teams: &HashMap<TeamName, usize>,
) -> Matcher {
    let mut out = Matcher::default();
    if let Some(list) = &m.teams {
        let mut names = Vec::new();
        for (i, t) in list.iter().enumerate() {
            match TeamName::parse(t) {
                Ok(n) if teams.contains_key(&n) => names.push(n),
                Ok(_) => p.add(
                    format!("{path}.teams[{i}]"),
                    format!("team `{t}` is not defined under `teams`"),
                ),
                Err(e) => p.add(format!("{path}.teams[{i}]"), e.to_string()),
            }
        }
        out.teams = Some(names);
    }
    out.users = m.users.clone();
    out.requests = m
        .requests
        .as_ref()
        .map(|r| r.iter().map(|s| NamePattern::parse(s)).collect());
    if let Some(doors) = &m.doors {
        let mut list = Vec::new();
        for (i, d) in doors.iter().enumerate() {
            match d.as_str() {
                "skypilot" => list.push(Door::Skypilot),
                "vast" => list.push(Door::Vast),
                // `k8s` is the short name the Kubernetes door goes by.
                "kubernetes" | "k8s" => list.push(Door::Kubernetes),
                other => p.add(
                    format!("{path}.doors[{i}]"),
                    format!("unknown door `{other}`; use skypilot, vast or kubernetes (or k8s)"),
                ),
            }
        }
        out.doors = Some(list);
    }
    if let Some(src) = &m.when {
        match Expr::compile(src, REQUEST_VARS) {
            Ok(e) => out.when = Some(e),
            Err(e) => p.add(format!("{path}.when"), e),
        }
    }
    if let Some(src) = &m.resource {
        match Expr::compile(src, RESOURCE_VARS) {
            Ok(e) => out.resource = Some(e),
            Err(e) => p.add(format!("{path}.resource"), e),
        }
    }
    out
}

const ACTION_KEYS: &str =
    "deny, allowed_gpus, max_gpus, max_nodes, max_hourly_usd, require_autostop, \
max_autostop_minutes, default_autostop, use_spot, add_labels, require_labels, set, require_paths, \
add_volumes, set_resource, min_client_api_version, allowed_clouds, allowed_regions, allowed_images";

fn compile_rule(
    p: &mut Problems,
    path: &str,
    r: &RuleSpec,
    teams: &HashMap<TeamName, usize>,
) -> Option<Rule> {
    let name = match RuleName::parse(&r.name) {
        Ok(n) => n,
        Err(e) => {
            p.add(format!("{path}.name"), e.to_string());
            return None;
        }
    };
    if r.name.starts_with("team.") {
        p.add(
            format!("{path}.name"),
            "names starting with `team.` are reserved for the team limits",
        );
    }
    let path = format!("{path} (`{}`)", r.name);
    let matcher = compile_matcher(p, &format!("{path}.match"), &r.matcher, teams);

    let mut actions: Vec<(&str, Action)> = Vec::new();
    if let Some(m) = &r.deny {
        actions.push(("deny", Action::Deny(m.clone())));
    }
    if let Some(a) = &r.allowed_gpus {
        let (models, prune) = match a {
            AllowedGpusSpec::List(m) => (m, false),
            AllowedGpusSpec::Full { models, prune } => (models, *prune),
        };
        let models = gpu_models(p, &format!("{path}.allowed_gpus"), models);
        actions.push(("allowed_gpus", Action::AllowedGpus { models, prune }));
    }
    if let Some(n) = r.max_gpus {
        actions.push(("max_gpus", Action::MaxGpus(n)));
    }
    if let Some(n) = r.max_nodes {
        actions.push(("max_nodes", Action::MaxNodes(n)));
    }
    if let Some(usd) = r.max_hourly_usd {
        let usd = dollars(p, format!("{path}.max_hourly_usd"), usd);
        actions.push(("max_hourly_usd", Action::MaxHourly(usd)));
    }
    if let Some(req) = r.require_autostop {
        if !req {
            p.add(
                format!("{path}.require_autostop"),
                "only `true` is meaningful; remove the rule or set `mode: off`",
            );
        }
        actions.push(("require_autostop", Action::RequireAutostop));
    }
    if let Some(m) = r.max_autostop_minutes {
        if m < 1 {
            p.add(format!("{path}.max_autostop_minutes"), "must be at least 1");
        }
        actions.push(("max_autostop_minutes", Action::MaxAutostop(m)));
    }
    if let Some(a) = &r.default_autostop {
        if a.idle_minutes < 1 {
            p.add(
                format!("{path}.default_autostop.idle_minutes"),
                "must be at least 1",
            );
        }
        actions.push((
            "default_autostop",
            Action::DefaultAutostop(Autostop {
                idle_minutes: a.idle_minutes,
                down: a.down,
            }),
        ));
    }
    if let Some(s) = r.use_spot {
        if !s {
            p.add(
                format!("{path}.use_spot"),
                "only `true` is supported (Warden does not force on-demand)",
            );
        }
        actions.push(("use_spot", Action::UseSpot));
    }
    if let Some(l) = &r.add_labels {
        actions.push(("add_labels", Action::AddLabels(l.clone())));
    }
    if let Some(l) = &r.require_labels {
        actions.push(("require_labels", Action::RequireLabels(l.clone())));
    }
    if let Some(set) = &r.set {
        let mut list = Vec::new();
        for (k, v) in set {
            match parse_doc_path(k) {
                Ok((doc, keys)) => list.push((doc, keys, v.clone())),
                Err(e) => p.add(format!("{path}.set"), e),
            }
        }
        actions.push(("set", Action::Set(list)));
    }
    if let Some(req) = &r.require_paths {
        let mut list = Vec::new();
        for (i, k) in req.iter().enumerate() {
            match parse_doc_path(k) {
                Ok(dk) => list.push(dk),
                Err(e) => p.add(format!("{path}.require_paths[{i}]"), e),
            }
        }
        actions.push(("require_paths", Action::RequirePaths(list)));
    }
    if let Some(v) = &r.add_volumes {
        actions.push(("add_volumes", Action::AddVolumes(v.clone())));
    }
    if let Some(fields) = &r.set_resource {
        let mut list = Vec::new();
        for (k, v) in fields {
            let field = match k.as_str() {
                "cloud" => ResourceField::Cloud,
                "region" => ResourceField::Region,
                "zone" => ResourceField::Zone,
                "image_id" => ResourceField::ImageId,
                "disk_size" => ResourceField::DiskSize,
                other => {
                    p.add(
                        format!("{path}.set_resource.{other}"),
                        "unknown field; use cloud, region, zone, image_id or disk_size",
                    );
                    continue;
                }
            };
            let ok = match field {
                ResourceField::DiskSize => v.as_i64().is_some_and(|n| n > 0),
                _ => v.is_string(),
            };
            if !ok {
                p.add(
                    format!("{path}.set_resource.{k}"),
                    "expected a string (a positive integer for disk_size)",
                );
            }
            list.push((field, v.clone()));
        }
        actions.push(("set_resource", Action::SetResource(list)));
    }
    if let Some(v) = &r.min_client_api_version {
        let (version, unknown) = match v {
            MinVersionSpec::Version(v) => (*v, UnknownVersion::Allow),
            MinVersionSpec::Full { version, unknown } => (*version, *unknown),
        };
        actions.push((
            "min_client_api_version",
            Action::MinClientApiVersion { version, unknown },
        ));
    }
    if let Some(c) = &r.allowed_clouds {
        let clouds = c.iter().map(|c| normalize_cloud(c)).collect();
        actions.push(("allowed_clouds", Action::AllowedClouds(clouds)));
    }
    if let Some(c) = &r.allowed_regions {
        actions.push(("allowed_regions", Action::AllowedRegions(c.clone())));
    }
    if let Some(c) = &r.allowed_images {
        actions.push(("allowed_images", Action::AllowedImages(c.clone())));
    }

    let mut it = actions.into_iter();
    let Some((_, action)) = it.next() else {
        p.add(
            path,
            format!("the rule has no action; give exactly one of: {ACTION_KEYS}"),
        );
        return None;
    };
    let extra: Vec<&str> = it.map(|(k, _)| k).collect();
    if !extra.is_empty() {
        p.add(
            path,
            format!(
                "the rule has more than one action (also {}); split it into one rule per action",
                extra.join(", ")
            ),
        );
        return None;
    }
    Some(Rule {
        name,
        mode: r.mode,
        controllers: r.controllers,
        hint: None,
        note: r
            .message
            .as_deref()
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(str::to_owned),
        matcher,
        action,
    })
}

/// Lower-cases a cloud name and maps aliases (`k8s` → `kubernetes`).
pub fn normalize_cloud(c: &str) -> String {
    let c = c.trim().to_ascii_lowercase();
    match c.as_str() {
        "k8s" => "kubernetes".to_owned(),
        _ => c,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::BudgetMode;

    fn err(yaml: &str) -> String {
        Policy::from_yaml(yaml).unwrap_err().to_string()
    }

    #[test]
    fn unknown_keys_are_errors_with_paths() {
        let e = err("rules:\n  - name: a\n    deny: no\n    mdoe: warn\n");
        assert!(e.contains("rules[0]") && e.contains("mdoe"), "{e}");
        let e = err("teams:\n  ml:\n    max_gpu: 3\n");
        assert!(e.contains("teams.ml") && e.contains("max_gpu"), "{e}");
    }

    #[test]
    fn budgets_compile_mode_and_alert_thresholds() {
        let p = Policy::from_yaml(
            "teams:\n  ml:\n    budgets: {daily_usd: 10, mode: soft, alert_percent: [100, 50, 50]}\n  cv:\n    budgets: {monthly_usd: 10}\n",
        )
        .unwrap();
        let b = |t: &str| {
            p.team(&TeamName::parse(t).unwrap())
                .unwrap()
                .budgets
                .clone()
        };
        assert_eq!(b("ml").mode, BudgetMode::Soft);
        assert_eq!(b("ml").alert_percent, vec![50, 100]);
        assert_eq!(b("cv").mode, BudgetMode::Hard);
        assert_eq!(b("cv").alert_percent, DEFAULT_ALERT_PERCENT.to_vec());
        let e = err("teams:\n  ml:\n    budgets: {daily_usd: 1, alert_percent: [0, 80]}\n");
        assert!(
            e.contains("teams.ml.budgets.alert_percent") && e.contains("`0` is not a percentage"),
            "{e}"
        );
        let e = err("teams:\n  ml:\n    budgets: {daily_usd: 1, mode: sometimes}\n");
        assert!(e.contains("unknown variant `sometimes`"), "{e}");
    }

    /// A condition evaluated natively (`resource.gpus > 0`) decides exactly
    /// as the same condition run by CEL (parenthesized, so not native).
    #[test]
    fn native_resource_conditions_decide_as_cel_does() {
        use crate::request::{Accelerator, LaunchRequest, Resource};
        use crate::Door;
        use crate::GpuModel;
        let conditions = [
            "resource.gpus > 0",
            "resource.gpus >= 8",
            "resource.total_gpus != 16",
            "resource.index == 1",
            "resource.gpus <= 1",
        ];
        let policy = |cond: &str| {
            Policy::from_yaml(&format!(
                "default_team: t\nteams: {{t: {{}}}}\nrules:\n  - {{name: a, match: {{resource: '{cond}'}}, use_spot: true}}\n  - {{name: b, match: {{resource: '{cond}'}}, allowed_gpus: {{models: [A100], prune: true}}}}\n  - {{name: c, match: {{resource: '{cond}'}}, deny: no}}\n"
            ))
            .unwrap()
        };
        let gpu = |name: &str, count| Resource {
            accelerator: Some(Accelerator {
                model: GpuModel::parse(name).unwrap(),
                count,
            }),
            ..Resource::default()
        };
        let shapes = [
            vec![Resource::default()],
            vec![gpu("H100", 8)],
            vec![gpu("H100", 1), gpu("A100", 8), Resource::default()],
            vec![gpu("A100", 1), gpu("H100", 16)],
        ];
        for cond in conditions {
            let native = policy(cond);
            let cel = policy(&format!("({cond})"));
            assert!(native.rules[0]
                .matcher
                .resource
                .as_ref()
                .unwrap()
                .native()
                .is_some());
            assert!(cel.rules[0]
                .matcher
                .resource
                .as_ref()
                .unwrap()
                .native()
                .is_none());
            for resources in &shapes {
                for nodes in [1, 2] {
                    let mut req = LaunchRequest::new(Door::Skypilot, "launch".to_owned());
                    req.resources = resources.clone();
                    req.num_nodes = nodes;
                    assert_eq!(
                        format!("{:?}", native.decide(&req)),
                        format!("{:?}", cel.decide(&req)),
                        "{cond} on {resources:?} x{nodes}"
                    );
                }
            }
        }
    }

    #[test]
    fn rules_need_exactly_one_action() {
        assert!(err("rules:\n  - name: a\n").contains("no action"));
        let e = err("rules:\n  - name: a\n    deny: x\n    use_spot: true\n");
        assert!(e.contains("more than one action (also use_spot)"), "{e}");
    }

    #[test]
    fn reports_every_problem() {
        let e = Policy::from_yaml(
            "default_team: nope\nrules:\n  - name: a\n    match: {when: 'foo > 1', teams: [x]}\n    deny: d\n  - name: a\n    max_nodes: 2\n",
        )
        .unwrap_err();
        let text = e.to_string();
        assert_eq!(e.problems.len(), 4, "{text}");
        assert!(text.contains("default_team: team `nope`"), "{text}");
        assert!(text.contains("rules[0] (`a`).match.when"), "{text}");
        assert!(text.contains("rules[0] (`a`).match.teams[0]"), "{text}");
        assert!(text.contains("already used by rules[0]"), "{text}");
    }

    #[test]
    fn users_belong_to_one_team() {
        let e = err("teams:\n  a: {users: [bob]}\n  b: {users: [bob]}\n");
        assert!(e.contains("user `bob` is already in team `a`"), "{e}");
    }

    #[test]
    fn a_skypilot_user_claim_picks_its_field() {
        use crate::SkypilotUserClaim as C;
        let (name, id) = (Some("alice@example.com"), Some("fcd1e5cf"));
        assert_eq!(C::Name.pick(name, id).as_deref(), Some("alice@example.com"));
        assert_eq!(C::EmailLocalPart.pick(name, id).as_deref(), Some("alice"));
        assert_eq!(C::Id.pick(name, id).as_deref(), Some("fcd1e5cf"));
        assert_eq!(
            C::EmailLocalPart.pick(Some("root"), None).as_deref(),
            Some("root")
        );
        assert_eq!(
            C::EmailLocalPart.pick(Some("@odd"), None).as_deref(),
            Some("@odd")
        );
        assert_eq!(C::Id.pick(name, Some(" ")), None);
        assert_eq!(C::Name.pick(None, id), None);
    }

    #[test]
    fn team_from_label_takes_three_values() {
        let e = err("team_from_label: sometimes\n");
        assert!(
            e.contains("team_from_label")
                && e.contains("unknown variant `sometimes`")
                && e.contains("`client_side`, `always`, `never`"),
            "{e}"
        );
    }

    /// A config nested past [`crate::MAX_CONFIG_DEPTH`] is refused before
    /// serde builds anything, naming the place and the limit.
    #[test]
    fn deep_configs_are_refused_before_parsing() {
        for text in [
            format!("teams: {}{}\n", "[".repeat(64), "]".repeat(64)),
            format!("teams: {}{}\n", "[".repeat(100_000), "]".repeat(100_000)),
            format!("teams: {}\n", "{a: ".repeat(100_000)),
            format!("rules:\n  {}x\n", "- ".repeat(100_000)),
        ] {
            let e = err(&text);
            assert!(
                e.starts_with("line ")
                    && e.contains(", column ")
                    && e.contains("nested deeper than the limit of 64 levels"),
                "{e}"
            );
        }
        let e = err("teams: {ml: {users: [alice}\n");
        assert!(e.contains("YAML syntax error"), "{e}");
    }
}
