//! Who is asking, at the HTTP endpoints: a Warden key presented as
//! `Authorization: Bearer wdn_...`, checked against the store (one read by
//! primary key, a constant-time hash comparison), and what its holder may
//! do, asked of the core's access model ([`warden_core::access`]). No
//! endpoint checks a role on its own: each asks [`Authenticated::review`].
//!
//! A missing or invalid key is a 401, a role that may not do what is asked
//! a 403; both say what to fix. Keys are never logged.

use axum::http::{header, HeaderMap};
use warden_core::access::{Resource, Review, Subject, Verb};
use warden_core::{Policy, TeamName};
use warden_store::{KeyError, KeyPrincipal, Store, UnixMicros};

use crate::error::DoorError;

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

/// An authenticated caller of an endpoint.
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// The key it presented.
    pub key: KeyPrincipal,
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
    /// The caller as the access model sees it: its key's role in its team.
    pub fn subject(&self) -> Subject {
        Subject {
            user: Some(owner(self.key.user.as_ref().map(|u| u.as_str())).to_owned()),
            groups: Vec::new(),
            key: Some((self.key.role, self.key.team.clone())),
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
                "key {}: {}",
                self.key.id, review.reason
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
            if !self.review(policy, verb, resource, &team.name).allowed {
                return Err(DoorError::Forbidden(format!(
                    "key {} (`{}` of team `{}`) may not {} {} of every team, which this covers; {hint}",
                    self.key.id,
                    self.key.role,
                    self.key.team,
                    verb.as_str(),
                    resource.as_str(),
                )));
            }
        }
        Ok(())
    }
}

/// The 401 text of an endpoint that needs a key.
pub const NEEDS_KEY: &str = "this endpoint needs a Warden key: send `Authorization: Bearer wdn_...`; a platform admin makes one with `warden keys create --team TEAM --role ROLE`";
