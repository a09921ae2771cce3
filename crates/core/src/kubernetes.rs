//! What a policy says about a team on a Kubernetes cluster
//! (`teams.<t>.kubernetes`): the namespace the team owns and the caps Warden
//! renders into it besides the GPU quota (which comes from
//! `teams.<t>.quotas`). The Kubernetes door finds a request's team by its
//! namespace ([`crate::Policy::team_of_namespace`]).

use std::collections::BTreeMap;

use serde::Deserialize;

/// `teams.<name>.kubernetes` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesTeamSpec {
    /// The team's namespace (a DNS-1123 label); default the team name.
    #[serde(default)]
    pub namespace: Option<String>,
    /// `requests.storage` of the namespace's ResourceQuota (a Kubernetes
    /// quantity such as `10Ti`).
    #[serde(default)]
    pub requests_storage: Option<String>,
    /// `persistentvolumeclaims` of the ResourceQuota.
    #[serde(default)]
    pub persistent_volume_claims: Option<u64>,
    /// `pods` of the ResourceQuota.
    #[serde(default)]
    pub pods: Option<u64>,
    /// Default container requests of the namespace's LimitRange
    /// (resource → quantity); default `{cpu: "1", memory: 4Gi}`.
    #[serde(default)]
    pub default_requests: Option<BTreeMap<String, String>>,
    /// Default container limits of the LimitRange (resource → quantity);
    /// default none.
    #[serde(default)]
    pub default_limits: Option<BTreeMap<String, String>>,
    /// Cap on `activeDeadlineSeconds` of the team's Jobs and Pods: admission
    /// sets it when absent or larger (the analogue of an autostop cap).
    #[serde(default)]
    pub max_active_deadline_seconds: Option<u64>,
    /// Labels on the namespace and on every admitted pod (e.g.
    /// `cost-centre: cc-1234`), besides `warden.dev/team`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// Container requests a LimitRange gives when a team names none.
pub const DEFAULT_REQUESTS: [(&str, &str); 2] = [("cpu", "1"), ("memory", "4Gi")];

/// A team's compiled Kubernetes options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KubernetesTeam {
    /// The namespace; `None` when the team name is not a DNS-1123 label and
    /// none is written (the team then has no namespace).
    pub namespace: Option<String>,
    /// `requests.storage`.
    pub requests_storage: Option<String>,
    /// `persistentvolumeclaims`.
    pub persistent_volume_claims: Option<u64>,
    /// `pods`.
    pub pods: Option<u64>,
    /// LimitRange default requests.
    pub default_requests: BTreeMap<String, String>,
    /// LimitRange default limits.
    pub default_limits: BTreeMap<String, String>,
    /// `activeDeadlineSeconds` cap.
    pub max_active_deadline_seconds: Option<u64>,
    /// Labels for the namespace and admitted pods.
    pub labels: BTreeMap<String, String>,
}

/// Whether `s` is a DNS-1123 label (a namespace name): 1–63 of `a-z0-9-`,
/// starting and ending with a letter or digit.
pub fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b.first() != Some(&b'-')
        && b.last() != Some(&b'-')
}

/// Whether `s` is a Kubernetes quantity (`1`, `500m`, `4Gi`, `1.5`, `10Ti`,
/// `1e3`): a decimal number with an optional binary or decimal suffix.
pub fn is_quantity(s: &str) -> bool {
    let s = s.strip_prefix('+').unwrap_or(s);
    let digits_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(digits_end);
    let number_ok = !num.is_empty()
        && num != "."
        && num.matches('.').count() <= 1
        && num.chars().any(|c| c.is_ascii_digit());
    let suffix_ok = matches!(
        suffix,
        "" | "Ki"
            | "Mi"
            | "Gi"
            | "Ti"
            | "Pi"
            | "Ei"
            | "n"
            | "u"
            | "m"
            | "k"
            | "M"
            | "G"
            | "T"
            | "P"
            | "E"
    ) || suffix.strip_prefix(['e', 'E']).is_some_and(|e| {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        !e.is_empty() && e.len() <= 3 && e.chars().all(|c| c.is_ascii_digit())
    });
    number_ok && suffix_ok && s.len() <= 64
}

/// Whether `s` is a label key: an optional DNS subdomain prefix (≤ 253) and
/// `/`, then a name of 1–63 alphanumerics, `-`, `_`, `.` starting and
/// ending alphanumeric.
pub fn is_label_key(s: &str) -> bool {
    let (prefix, name) = match s.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    let prefix_ok =
        prefix.is_none_or(|p| !p.is_empty() && p.len() <= 253 && p.split('.').all(is_dns_label));
    prefix_ok && !name.is_empty() && is_label_value(name)
}

/// Whether `s` is a label value: empty, or 1–63 alphanumerics, `-`, `_`,
/// `.` starting and ending alphanumeric.
pub fn is_label_value(s: &str) -> bool {
    let b = s.as_bytes();
    b.is_empty()
        || (b.len() <= 63
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
            && b.first().is_some_and(u8::is_ascii_alphanumeric)
            && b.last().is_some_and(u8::is_ascii_alphanumeric))
}

/// Validates `teams.<name>.kubernetes` for team `team`; problems are
/// `(key path, message)`.
pub(crate) fn compile(
    path: &str,
    team: &str,
    spec: Option<&KubernetesTeamSpec>,
) -> (KubernetesTeam, Vec<(String, String)>) {
    let mut problems = Vec::new();
    let default = KubernetesTeamSpec::default();
    let spec = spec.unwrap_or(&default);
    let at = |key: &str| format!("{path}.kubernetes.{key}");
    let namespace = match &spec.namespace {
        Some(ns) if is_dns_label(ns) => Some(ns.clone()),
        Some(ns) => {
            problems.push((
                at("namespace"),
                format!(
                    "`{ns}` is not a namespace name: 1 to 63 lower-case letters, digits \
                     and `-`, starting and ending with a letter or digit (e.g. `ml-research`)"
                ),
            ));
            None
        }
        None => is_dns_label(team).then(|| team.to_owned()),
    };
    if let Some(q) = &spec.requests_storage {
        if !is_quantity(q) {
            problems.push((
                at("requests_storage"),
                format!("`{q}` is not a Kubernetes quantity (e.g. `10Ti`, `500Gi`)"),
            ));
        }
    }
    let mut resources = |key: &str, map: &BTreeMap<String, String>| {
        for (resource, q) in map {
            if !is_label_key(resource) {
                problems.push((
                    format!("{}.{resource}", at(key)),
                    format!("`{resource}` is not a resource name (e.g. `cpu`, `memory`)"),
                ));
            }
            if !is_quantity(q) {
                problems.push((
                    format!("{}.{resource}", at(key)),
                    format!("`{q}` is not a Kubernetes quantity (e.g. `1`, `500m`, `4Gi`)"),
                ));
            }
        }
    };
    let default_requests = spec.default_requests.clone().unwrap_or_else(|| {
        DEFAULT_REQUESTS
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    });
    resources("default_requests", &default_requests);
    let default_limits = spec.default_limits.clone().unwrap_or_default();
    resources("default_limits", &default_limits);
    if spec.max_active_deadline_seconds == Some(0) {
        problems.push((
            at("max_active_deadline_seconds"),
            "must be at least 1 (seconds); leave it out for no cap".to_owned(),
        ));
    }
    for (k, v) in &spec.labels {
        if !is_label_key(k) {
            problems.push((
                format!("{}.{k}", at("labels")),
                format!(
                    "`{k}` is not a Kubernetes label key (e.g. `cost-centre`, `example.com/owner`)"
                ),
            ));
        } else if k == "warden.dev/team" {
            problems.push((
                format!("{}.{k}", at("labels")),
                "Warden sets `warden.dev/team` itself; remove it here".to_owned(),
            ));
        }
        if !is_label_value(v) {
            problems.push((
                format!("{}.{k}", at("labels")),
                format!(
                    "`{v}` is not a Kubernetes label value: at most 63 letters, digits, `-`, \
                     `_` and `.`, starting and ending with a letter or digit"
                ),
            ));
        }
    }
    (
        KubernetesTeam {
            namespace,
            requests_storage: spec.requests_storage.clone(),
            persistent_volume_claims: spec.persistent_volume_claims,
            pods: spec.pods,
            default_requests,
            default_limits,
            max_active_deadline_seconds: spec.max_active_deadline_seconds,
            labels: spec.labels.clone(),
        },
        problems,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_quantities_follow_kubernetes() {
        for ok in ["ml-research", "a", "team1", &"a".repeat(63)] {
            assert!(is_dns_label(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "ML", "a_b", "a.b", &"a".repeat(64)] {
            assert!(!is_dns_label(bad), "{bad}");
        }
        for ok in ["1", "500m", "4Gi", "1.5", "10Ti", "1e3", "0.5Gi", "+2"] {
            assert!(is_quantity(ok), "{ok}");
        }
        for bad in ["", "Gi", "1GB", "1.2.3", "-1", ".", "1 Gi", "ten"] {
            assert!(!is_quantity(bad), "{bad}");
        }
        for ok in [
            "cost-centre",
            "example.com/owner",
            "a.b_c-d",
            "nvidia.com/gpu",
        ] {
            assert!(is_label_key(ok), "{ok}");
        }
        for bad in ["", "/a", "a/", "-a", "Example.com/x", "a b"] {
            assert!(!is_label_key(bad), "{bad}");
        }
        assert!(is_label_value(""));
        assert!(!is_label_value("a b"));
    }

    #[test]
    fn the_namespace_defaults_to_the_team_name_when_it_can_be_one() {
        let (k, p) = compile("teams.ml", "ml", None);
        assert!(p.is_empty());
        assert_eq!(k.namespace.as_deref(), Some("ml"));
        assert_eq!(k.default_requests.get("cpu").map(String::as_str), Some("1"));
        let (k, p) = compile("teams.ML_team", "ML_team", None);
        assert!(p.is_empty());
        assert_eq!(k.namespace, None);
    }

    #[test]
    fn bad_values_name_their_key() {
        let spec = KubernetesTeamSpec {
            namespace: Some("Bad_NS".into()),
            requests_storage: Some("10TB".into()),
            default_requests: Some([("cpu".into(), "lots".into())].into()),
            max_active_deadline_seconds: Some(0),
            labels: [
                ("warden.dev/team".into(), "x".into()),
                ("ok".into(), "a b".into()),
            ]
            .into(),
            ..Default::default()
        };
        let (_, p) = compile("teams.t", "t", Some(&spec));
        let keys: Vec<&str> = p.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "teams.t.kubernetes.namespace",
                "teams.t.kubernetes.requests_storage",
                "teams.t.kubernetes.default_requests.cpu",
                "teams.t.kubernetes.max_active_deadline_seconds",
                "teams.t.kubernetes.labels.ok",
                "teams.t.kubernetes.labels.warden.dev/team",
            ]
        );
    }
}
