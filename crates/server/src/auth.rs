//! Who is asking, at the HTTP endpoints: a Warden key presented as
//! `Authorization: Bearer wdn_...`, checked against the store (one read by
//! primary key, a constant-time hash comparison), or, where
//! `identity.oidc` is configured, any other bearer token as an OIDC token
//! of that issuer ([`crate::oidc`]: signature, issuer, audience, expiry),
//! which makes the caller a user with groups. What the caller may do is
//! asked of the core's access model ([`warden_core::access`]). No endpoint
//! checks a role on its own: each asks [`Authenticated::review`].
//!
//! A missing or invalid credential is a 401, a role that may not do what
//! is asked a 403; both say what to fix. Keys and tokens are never logged
//! or repeated.

use std::sync::Arc;

use axum::http::{header, HeaderMap};
use warden_core::access::{Resource, Review, Subject, Verb};
use warden_core::{Policy, TeamName};
use warden_store::{KeyError, KeyPrincipal, Store, UnixMicros};

use crate::error::DoorError;
use crate::oidc::{OidcUser, OidcVerifier};

/// The prefix of every Warden key; any other bearer token is taken for an
/// OIDC token.
pub const KEY_PREFIX: &str = "wdn_";

/// The bearer token of a request, if it sends one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|k| !k.is_empty())
}

/// Checks the request's Warden key at `now`; `missing` is the 401's text
/// when there is none (it says where a key comes from at this endpoint).
pub async fn key(
    store: &Store,
    headers: &HeaderMap,
    now: UnixMicros,
    missing: &str,
) -> Result<KeyPrincipal, DoorError> {
    let Some(presented) = bearer(headers) else {
        return Err(DoorError::Unauthorized(missing.to_owned()));
    };
    match store.authenticate(presented, now).await {
        Ok(key) => Ok(key),
        Err(KeyError::Store(e)) => Err(DoorError::store(&e)),
        Err(e) => Err(DoorError::Unauthorized(e.to_string())),
    }
}

/// Checks the request's credential at `now`: a Warden key (`wdn_...`)
/// against `store`, anything else as an OIDC token with `oidc` (a 401
/// saying OIDC is not configured when it is `None`). `missing` is the
/// 401's text when there is no bearer token.
pub async fn authenticate(
    store: &Store,
    oidc: Option<&OidcVerifier>,
    headers: &HeaderMap,
    now: UnixMicros,
    missing: &str,
) -> Result<Authenticated, DoorError> {
    let Some(presented) = bearer(headers) else {
        return Err(DoorError::Unauthorized(missing.to_owned()));
    };
    if presented.starts_with(KEY_PREFIX) {
        return key(store, headers, now, missing)
            .await
            .map(Authenticated::Key);
    }
    let Some(oidc) = oidc else {
        return Err(DoorError::Unauthorized(
            "the bearer token is not a Warden key (`wdn_...`), and this Warden does not accept OIDC tokens (`identity.oidc` is not configured); send a Warden key, or ask a platform admin to configure OIDC sign-in".to_owned(),
        ));
    };
    oidc.verify(presented)
        .await
        .map(Authenticated::Oidc)
        .map_err(DoorError::from)
}

/// An authenticated caller of an endpoint.
#[derive(Debug, Clone)]
pub enum Authenticated {
    /// By a Warden key: its role in its team.
    Key(KeyPrincipal),
    /// By an OIDC token: a user with groups, holding what `role_bindings`
    /// give them.
    Oidc(Arc<OidcUser>),
}

/// Who a key without `--user` acts for when the access model asks whose a
/// thing is: the team's unnamed user, so such a key's own things are those
/// made by keys without a user.
pub const UNNAMED_USER: &str = "(no user)";

/// The owner to ask the access model about, for a thing made by `user`.
pub fn owner(user: Option<&str>) -> &str {
    user.unwrap_or(UNNAMED_USER)
}

impl Authenticated {
    /// The caller as the access model sees it: a key's role in its team,
    /// or a user with groups.
    pub fn subject(&self) -> Subject {
        match self {
            Authenticated::Key(key) => Subject {
                user: Some(owner(key.user.as_ref().map(|u| u.as_str())).to_owned()),
                groups: Vec::new(),
                key: Some((key.role, key.team.clone())),
            },
            Authenticated::Oidc(user) => user.subject(),
        }
    }

    /// The key it presented, if it is a key.
    pub fn key(&self) -> Option<&KeyPrincipal> {
        match self {
            Authenticated::Key(key) => Some(key),
            Authenticated::Oidc(_) => None,
        }
    }

    /// The caller in messages: `key ID` or `user `NAME``.
    pub fn describe(&self) -> String {
        match self {
            Authenticated::Key(key) => format!("key {}", key.id),
            Authenticated::Oidc(user) => format!("user `{}`", user.user),
        }
    }

    /// Who made a change, for audit records: `key:<id>` or `user:<name>`.
    pub fn actor(&self) -> String {
        match self {
            Authenticated::Key(key) => format!("key:{}", key.id),
            Authenticated::Oidc(user) => format!("user:{}", user.user),
        }
    }

    /// Whether the caller may give `role` to a key it makes in `team`: one
    /// of the roles it holds there may grant it ([`Role::may_grant`]).
    pub fn may_grant(
        &self,
        policy: &Policy,
        team: &TeamName,
        role: warden_core::access::Role,
    ) -> bool {
        policy
            .access()
            .roles_in(&self.subject(), team)
            .iter()
            .any(|(held, _)| held.may_grant(role))
    }

    /// What to ask for instead of a report across teams.
    pub fn one_team_hint(&self) -> String {
        match self {
            Authenticated::Key(key) => format!(
                "ask for one team with `team={}`, or use an admin key",
                key.team
            ),
            Authenticated::Oidc(_) => "ask for one team with `team=TEAM`, or ask a platform admin for a role binding over every team (`teams: \"*\"`)".to_owned(),
        }
    }

    /// May the caller do `verb` on `resource` in `team`?
    pub fn review(
        &self,
        policy: &Policy,
        verb: Verb,
        resource: Resource,
        team: &TeamName,
    ) -> Review {
        policy
            .access()
            .review(&self.subject(), verb, resource, team, None)
    }

    /// Refuses (403, with the reason) unless the caller may do `verb` on
    /// `resource` in `team`.
    pub fn require(
        &self,
        policy: &Policy,
        verb: Verb,
        resource: Resource,
        team: &TeamName,
    ) -> Result<(), DoorError> {
        let review = self.review(policy, verb, resource, team);
        if review.allowed {
            Ok(())
        } else {
            Err(DoorError::Forbidden(format!(
                "{}: {}",
                self.describe(),
                review.reason
            )))
        }
    }

    /// Refuses (403) unless the caller may do `verb` on `resource` in every
    /// team of `policy` (a report across teams); `hint` says what the caller
    /// can do instead.
    pub fn require_all_teams(
        &self,
        policy: &Policy,
        verb: Verb,
        resource: Resource,
        hint: &str,
    ) -> Result<(), DoorError> {
        for team in policy.teams() {
            let review = self.review(policy, verb, resource, &team.name);
            if !review.allowed {
                let who = match self {
                    Authenticated::Key(key) => {
                        format!("key {} (`{}` of team `{}`)", key.id, key.role, key.team)
                    }
                    Authenticated::Oidc(user) if user.groups.is_empty() => {
                        format!("user `{}` (no groups)", user.user)
                    }
                    Authenticated::Oidc(user) => format!(
                        "user `{}` (groups {})",
                        user.user,
                        user.groups
                            .iter()
                            .map(|g| format!("`{g}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                };
                return Err(DoorError::Forbidden(format!(
                    "{who} may not {} {} of every team, which this covers (team `{}`: {}); {hint}",
                    verb.as_str(),
                    resource.as_str(),
                    team.name,
                    review.reason,
                )));
            }
        }
        Ok(())
    }
}

/// The 401 text of an endpoint that needs a key (or an OIDC token).
pub const NEEDS_KEY: &str = "this endpoint needs a Warden key: send `Authorization: Bearer wdn_...`; a platform admin makes one with `warden keys create --team TEAM --role ROLE`. Where `identity.oidc` is configured, an OIDC token from the identity provider works too (`Authorization: Bearer TOKEN`)";
