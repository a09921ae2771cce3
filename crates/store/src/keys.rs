//! Team API keys: the keys Warden issues to teams (the Vast door's callers
//! present one instead of an upstream Vast key), stored as hashes.
//!
//! # What it guarantees
//!
//! - **Shown once.** A key's full text exists only in the [`IssuedKey`]
//!   returned by [`Store::create_key`] or [`Store::rotate_key`]; the store
//!   keeps its SHA-256 hash, never the key. [`KeySecret`] prints as
//!   `[redacted]` in `Debug`, so a stray `{:?}` cannot log it.
//! - **High entropy.** A key is `wdn_<id>_<secret>`: `id` is 64 random bits
//!   and `secret` 256 random bits, both from the operating system's CSPRNG
//!   (`getrandom`), in lowercase hex. The `wdn_` prefix makes a leaked key
//!   recognisable to secret scanners and people.
//! - **One indexed lookup, a constant-time comparison.** The `id` in the key
//!   is the row's primary key, so [`Store::authenticate`] reads one row; it
//!   then compares the presented key's hash with the stored one in constant
//!   time (`subtle`). A wrong secret and an unknown id give the same
//!   [`KeyError::Unknown`]; whether a key is revoked or expired is told only
//!   to a caller who presented its correct secret.
//! - **Audited, never with secrets.** Creating, revoking and rotating a key
//!   each append an audit record (`key.created`, `key.revoked`,
//!   `key.rotated`) in the transaction of the change. Payloads hold ids,
//!   team, user, name and instants; never the key, its secret or its hash.
//! - **Revocation is immediate**, on every replica: nothing is cached, each
//!   authentication reads the row.
//!
//! # Why a fast hash, not argon2
//!
//! Slow password hashes (argon2, bcrypt, scrypt) exist because passwords
//! have little entropy: they make each guess of an offline attack costly.
//! A Warden key's secret is 256 uniformly random bits, so even with the
//! whole table of hashes an attacker faces 2^256 guesses, and no hash speed
//! changes that. Slowness would instead cost every request: argon2 with
//! sensible parameters takes tens of milliseconds of CPU, against a door's
//! budget of about 20 µs per request (DESIGN.md, "Performance notes"), and
//! would make the door an easy target for denial of service. So the hash is
//! one SHA-256 (about 1 µs), and no server-side pepper is needed either: a
//! pepper protects guessable secrets, and would be one more secret to
//! distribute to every replica.
//!
//! # Hash encoding
//!
//! ```text
//! hash = lowercase_hex(SHA-256(str("warden.api_key.v1") || str(id) || str(secret)))
//! str(s) = the 8-byte big-endian byte length of s || the UTF-8 bytes of s
//! ```
//!
//! where `id` and `secret` are the key's two hex parts. Binding the id into
//! the hash means a row's hash cannot be copied to another id.
//!
//! # Not done here
//!
//! - **No cache.** Authentication costs one primary-key read (tens of
//!   microseconds on SQLite, one round trip on PostgreSQL). A per-process
//!   cache would delay revocations made through another replica; if one is
//!   added, bound its entries' age to a few seconds.
//! - **No "last used".** Recording it would turn every authenticated
//!   request into a write.
//! - **Teams are not checked here.** The store does not know the config: the
//!   CLI checks a team exists before creating a key, and a door must check
//!   that the [`KeyPrincipal`]'s team is still in the current policy.

use std::fmt;
use std::time::Duration;

use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;
use warden_core::access::Role;
use warden_core::TeamName;

use crate::audit::NewRecord;
use crate::backend::{on_pool, on_tx, Tx};
use crate::error::StoreError;
use crate::time::UnixMicros;
use crate::Store;

/// What every Warden key begins with.
pub const KEY_PREFIX: &str = "wdn_";

/// Random bytes in a key's id (shown as twice as many hex characters).
const ID_BYTES: usize = 8;
/// Random bytes in a key's secret: 256 bits.
const SECRET_BYTES: usize = 32;
/// Hex characters of an id.
const ID_LEN: usize = ID_BYTES * 2;
/// Hex characters of a secret.
const SECRET_LEN: usize = SECRET_BYTES * 2;
/// The length of a whole key: `wdn_` + id + `_` + secret.
const KEY_LEN: usize = KEY_PREFIX.len() + ID_LEN + 1 + SECRET_LEN;

/// A key's public id: 16 lowercase hex characters. It appears inside the
/// key, in `warden keys list` and in audit records; it grants nothing.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct ApiKeyId(String);

impl ApiKeyId {
    /// Parses an id as `warden keys list` shows it.
    pub fn parse(raw: &str) -> Result<Self, KeyInputError> {
        if is_lower_hex(raw, ID_LEN) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(KeyInputError::Id {
                value: escape(raw, 40),
            })
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ApiKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A key's label for people (`--name`): 1 to 64 bytes, no control
/// characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct KeyName(String);

impl KeyName {
    /// The longest name accepted, in bytes.
    pub const MAX_LEN: usize = 64;

    /// Parses a key name.
    pub fn parse(raw: &str) -> Result<Self, KeyInputError> {
        check_label("key name", raw, Self::MAX_LEN).map(|()| Self(raw.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The user a key stands for within its team (`--user`), when it is not a
/// team-wide key: 1 to 128 bytes, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct KeyUser(String);

impl KeyUser {
    /// The longest user name accepted, in bytes.
    pub const MAX_LEN: usize = 128;

    /// Parses a user name.
    pub fn parse(raw: &str) -> Result<Self, KeyInputError> {
        check_label("user name", raw, Self::MAX_LEN).map(|()| Self(raw.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn check_label(what: &'static str, raw: &str, max: usize) -> Result<(), KeyInputError> {
    let problem = if raw.trim().is_empty() {
        "is empty"
    } else if raw.len() > max {
        "is too long"
    } else if raw.chars().any(char::is_control) {
        "contains a control character"
    } else {
        return Ok(());
    };
    Err(KeyInputError::Label {
        what,
        value: escape(raw, 80),
        problem,
        max,
    })
}

/// `raw`, at most `max` characters of it, with control characters escaped:
/// safe to show in an error.
fn escape(raw: &str, max: usize) -> String {
    let mut out: String = raw.chars().take(max).flat_map(char::escape_debug).collect();
    if raw.chars().count() > max {
        out.push('…');
    }
    out
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A whole key, `wdn_<id>_<secret>`, as handed to its holder once. Its
/// `Debug` is `KeySecret([redacted])`; it has no `Display`, and the only way
/// to the text is [`KeySecret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct KeySecret(String);

impl KeySecret {
    /// The key's text, to print once or to send as a credential.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for KeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeySecret([redacted])")
    }
}

/// A freshly generated key and the hash to store for it. Pure apart from
/// reading the operating system's CSPRNG.
#[derive(Debug, Clone)]
pub struct GeneratedKey {
    /// The key's id.
    pub id: ApiKeyId,
    /// The whole key.
    pub secret: KeySecret,
    /// What the store keeps: see the module doc for the encoding.
    pub hash: String,
}

/// Generates a new key: 64 bits of id and 256 bits of secret from the
/// operating system's CSPRNG.
pub fn generate_key() -> Result<GeneratedKey, KeyAdminError> {
    let mut bytes = [0_u8; ID_BYTES + SECRET_BYTES];
    getrandom::getrandom(&mut bytes).map_err(|e| KeyAdminError::Entropy(e.to_string()))?;
    let (id, secret) = bytes.split_at(ID_BYTES);
    let (id, secret) = (hex(id), hex(secret));
    let hash = key_hash(&id, &secret);
    Ok(GeneratedKey {
        secret: KeySecret(format!("{KEY_PREFIX}{id}_{secret}")),
        id: ApiKeyId(id),
        hash,
    })
}

/// Splits a presented key into its id and secret, without looking anything
/// up. `None` unless it is exactly `wdn_` + 16 + `_` + 64 lowercase hex
/// characters.
fn split_key(presented: &str) -> Option<(ApiKeyId, &str)> {
    if presented.len() != KEY_LEN {
        return None;
    }
    let rest = presented.strip_prefix(KEY_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    (is_lower_hex(id, ID_LEN) && is_lower_hex(secret, SECRET_LEN))
        .then(|| (ApiKeyId(id.to_owned()), secret))
}

/// The stored hash of the key with these parts (see the module doc).
fn key_hash(id: &str, secret: &str) -> String {
    hex(&key_digest(id, secret))
}

fn key_digest(id: &str, secret: &str) -> [u8; 32] {
    fn str(h: &mut Sha256, s: &str) {
        h.update(u64::try_from(s.len()).unwrap_or(u64::MAX).to_be_bytes());
        h.update(s.as_bytes());
    }
    let mut h = Sha256::new();
    str(&mut h, "warden.api_key.v1");
    str(&mut h, id);
    str(&mut h, secret);
    h.finalize().into()
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a `String` cannot fail.
        let _ = write!(out, "{b:02x}");
    }
    out
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    let mut out = [0_u8; 32];
    if text.len() != 64 {
        return None;
    }
    for (byte, pair) in out.iter_mut().zip(text.as_bytes().chunks_exact(2)) {
        let digit = |c: u8| {
            char::from(c)
                .to_digit(16)
                .and_then(|d| u8::try_from(d).ok())
        };
        let [hi, lo] = pair else { return None };
        *byte = digit(*hi)? << 4 | digit(*lo)?;
    }
    Some(out)
}

/// What to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewKey {
    /// The team the key acts for (checked against the config by the caller).
    pub team: TeamName,
    /// The user it acts as, or `None` for a team-wide key.
    pub user: Option<KeyUser>,
    /// A label for people.
    pub name: Option<KeyName>,
    /// When it stops working; `None` for never.
    pub expires: Option<UnixMicros>,
    /// What it may do in its team (see `warden_core::access`).
    pub role: Role,
}

/// A key as listed: everything but the secret and its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiKey {
    /// Its id.
    pub id: ApiKeyId,
    /// Its label.
    pub name: Option<KeyName>,
    /// Its team.
    pub team: TeamName,
    /// Its user, if not team-wide.
    pub user: Option<KeyUser>,
    /// When it was created.
    #[serde(rename = "created_us")]
    pub created: UnixMicros,
    /// When it stops (or stopped) working; `None` for never.
    #[serde(rename = "expires_us")]
    pub expires: Option<UnixMicros>,
    /// When it was revoked.
    #[serde(rename = "revoked_us")]
    pub revoked: Option<UnixMicros>,
    /// The key that replaced it, when rotated.
    pub rotated_to: Option<ApiKeyId>,
    /// What it may do in its team.
    pub role: Role,
}

/// Whether a key works at some instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyState {
    /// It authenticates.
    Active,
    /// It was revoked (whatever its expiry).
    Revoked,
    /// Its expiry has passed.
    Expired,
}

impl ApiKey {
    /// Its state at `now`: revoked if ever revoked, else expired from its
    /// expiry instant on, else active.
    pub fn state(&self, now: UnixMicros) -> KeyState {
        if self.revoked.is_some() {
            KeyState::Revoked
        } else if self.expires.is_some_and(|e| now >= e) {
            KeyState::Expired
        } else {
            KeyState::Active
        }
    }

    fn principal(&self) -> KeyPrincipal {
        KeyPrincipal {
            id: self.id.clone(),
            team: self.team.clone(),
            user: self.user.clone(),
            name: self.name.clone(),
            expires: self.expires,
            role: self.role,
        }
    }
}

/// A key handed out: its text (show it once) and what was stored.
#[derive(Debug, Clone)]
pub struct IssuedKey {
    /// The whole key.
    pub secret: KeySecret,
    /// The stored key, as [`Store::list_keys`] shows it.
    pub key: ApiKey,
}

/// Who an authenticated key acts for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyPrincipal {
    /// The key's id (for audit records).
    pub id: ApiKeyId,
    /// Its team.
    pub team: TeamName,
    /// Its user, if not team-wide.
    pub user: Option<KeyUser>,
    /// Its label.
    pub name: Option<KeyName>,
    /// When it stops working.
    #[serde(rename = "expires_us")]
    pub expires: Option<UnixMicros>,
    /// What it may do in its team.
    pub role: Role,
}

/// What the replacement key of [`Store::rotate_key`] gets as expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotatedExpiry {
    /// As long a lifetime as the old key had, counted from now (never
    /// expiring if the old key never did).
    SameLifetime,
    /// Never.
    Never,
    /// This instant.
    At(UnixMicros),
}

/// The outcome of [`Store::rotate_key`].
#[derive(Debug, Clone)]
pub struct Rotated {
    /// The old key, now expiring at the end of the grace period (or earlier,
    /// if it already expired sooner).
    pub old: ApiKey,
    /// The replacement.
    pub new: IssuedKey,
}

/// A value for a key was not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyInputError {
    /// Not a key id.
    #[error("`{value}` is not a key id; ids are 16 lowercase hex characters, as `warden keys list` shows them")]
    Id {
        /// The offending text (escaped, shortened).
        value: String,
    },
    /// A name or user name was empty, too long or held a control character.
    #[error("{what} `{value}` {problem}; use 1 to {max} bytes without control characters")]
    Label {
        /// `key name` or `user name`.
        what: &'static str,
        /// The offending text (escaped, shortened).
        value: String,
        /// What is wrong.
        problem: &'static str,
        /// The longest accepted.
        max: usize,
    },
}

/// Why a presented key was not accepted. Messages never hold the presented
/// text: a caller may have sent some other secret by mistake.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// It does not have the shape of a Warden key.
    #[error("the credential is not a Warden API key; keys look like `wdn_<id>_<secret>`, as printed once by `warden keys create`")]
    Malformed,
    /// No key has this id, or its secret is wrong.
    #[error("API key `{id}` is not valid: no key with this id and secret exists")]
    Unknown {
        /// The id the key claimed.
        id: ApiKeyId,
    },
    /// The key was revoked.
    #[error("API key `{id}` was revoked at {at}; ask an admin for a new key")]
    Revoked {
        /// The key.
        id: ApiKeyId,
        /// When.
        at: UnixMicros,
    },
    /// The key expired.
    #[error(
        "API key `{id}` expired at {at}; ask an admin to rotate it (`warden keys rotate {id}`)"
    )]
    Expired {
        /// The key.
        id: ApiKeyId,
        /// When.
        at: UnixMicros,
    },
    /// The store could not be read: fail closed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a key could not be created, revoked or rotated.
#[derive(Debug, thiserror::Error)]
pub enum KeyAdminError {
    /// No key has this id.
    #[error("no key has id `{0}`; `warden keys list` shows the ids")]
    NotFound(ApiKeyId),
    /// The key is already revoked (revoking twice, or rotating a revoked
    /// key, which would bring back access an admin took away).
    #[error("key `{id}` was revoked at {at}; create a new key instead")]
    Revoked {
        /// The key.
        id: ApiKeyId,
        /// When.
        at: UnixMicros,
    },
    /// The operating system's random number generator failed.
    #[error("cannot read random bytes for a new key: {0}")]
    Entropy(String),
    /// The store failed; nothing was changed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The columns of a key row, in [`KeyRow`] order (the hash comes last).
const KEY_COLUMNS: &str =
    "id, name, team, user_name, created_us, expires_us, revoked_us, rotated_to, role, hash";

type KeyRow = (
    String,
    Option<String>,
    String,
    Option<String>,
    i64,
    Option<i64>,
    Option<i64>,
    Option<String>,
    String,
    String,
);

/// A row as an [`ApiKey`] and its stored hash.
fn key_row(row: KeyRow) -> Result<(ApiKey, String), StoreError> {
    let (id, name, team, user, created, expires, revoked, rotated_to, role, hash) = row;
    let corrupt = |detail: String| StoreError::Corrupt {
        what: format!("api key `{}`", escape(&id, 40)),
        detail,
    };
    let key = ApiKey {
        id: ApiKeyId::parse(&id).map_err(|e| corrupt(e.to_string()))?,
        name: name
            .map(|n| KeyName::parse(&n))
            .transpose()
            .map_err(|e| corrupt(e.to_string()))?,
        team: TeamName::parse(&team).map_err(|e| corrupt(e.to_string()))?,
        user: user
            .map(|u| KeyUser::parse(&u))
            .transpose()
            .map_err(|e| corrupt(e.to_string()))?,
        created: UnixMicros::from_micros(created),
        expires: expires.map(UnixMicros::from_micros),
        revoked: revoked.map(UnixMicros::from_micros),
        rotated_to: rotated_to
            .map(|r| ApiKeyId::parse(&r))
            .transpose()
            .map_err(|e| corrupt(e.to_string()))?,
        role: Role::parse(&role).map_err(corrupt)?,
    };
    Ok((key, hash))
}

/// The audit payload of a key: never its secret or hash.
fn key_json(key: &ApiKey) -> serde_json::Value {
    json!({
        "key_id": key.id,
        "team": key.team,
        "user": key.user,
        "name": key.name,
        "role": key.role,
        "created_us": key.created,
        "expires_us": key.expires,
        "revoked_us": key.revoked,
    })
}

/// An audit payload with `actor` (who asked), when known.
fn with_actor(mut payload: serde_json::Value, actor: Option<&str>) -> String {
    if let (Some(actor), Some(map)) = (actor, payload.as_object_mut()) {
        map.insert("actor".to_owned(), actor.into());
    }
    payload.to_string()
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

impl Tx {
    async fn insert_key(
        &mut self,
        generated: &GeneratedKey,
        new: &NewKey,
        now: UnixMicros,
    ) -> Result<(), StoreError> {
        on_tx!(self, |conn| {
            sqlx::query(
                "INSERT INTO api_keys (id, hash, name, team, user_name, created_us, expires_us, role) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(generated.id.as_str())
            .bind(&generated.hash)
            .bind(new.name.as_ref().map(KeyName::as_str))
            .bind(new.team.as_str())
            .bind(new.user.as_ref().map(KeyUser::as_str))
            .bind(now.micros())
            .bind(new.expires.map(UnixMicros::micros))
            .bind(new.role.as_str())
            .execute(&mut *conn)
            .await?;
        });
        Ok(())
    }

    /// The key `id`, locked until the transaction ends on PostgreSQL
    /// (SQLite's write transaction holds the database already).
    async fn key_for_update(&mut self, id: &ApiKeyId) -> Result<ApiKey, KeyAdminError> {
        let sql = format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1{}",
            if self.is_postgres() {
                " FOR UPDATE"
            } else {
                ""
            }
        );
        let row: Option<KeyRow> = on_tx!(self, |conn| {
            sqlx::query_as(&sql)
                .bind(id.as_str())
                .fetch_optional(&mut *conn)
                .await
                .map_err(StoreError::from)?
        });
        let (key, _hash) = key_row(row.ok_or_else(|| KeyAdminError::NotFound(id.clone()))?)?;
        Ok(key)
    }
}

fn issued(generated: GeneratedKey, new: NewKey, now: UnixMicros) -> IssuedKey {
    IssuedKey {
        secret: generated.secret,
        key: ApiKey {
            id: generated.id,
            name: new.name,
            team: new.team,
            user: new.user,
            created: now,
            expires: new.expires,
            revoked: None,
            rotated_to: None,
            role: new.role,
        },
    }
}

impl Store {
    /// Creates a key and appends a `key.created` audit record, in one
    /// transaction. The returned [`IssuedKey::secret`] is the only copy of
    /// the key: show it to its holder once.
    pub async fn create_key(
        &self,
        new: NewKey,
        now: UnixMicros,
    ) -> Result<IssuedKey, KeyAdminError> {
        self.create_key_by(new, None, now).await
    }

    /// [`Store::create_key`], with who asked in the audit record.
    pub async fn create_key_by(
        &self,
        new: NewKey,
        actor: Option<&str>,
        now: UnixMicros,
    ) -> Result<IssuedKey, KeyAdminError> {
        let generated = generate_key()?;
        let mut tx = self.begin_write().await?;
        tx.insert_key(&generated, &new, now).await?;
        let issued = issued(generated, new, now);
        tx.append_records(vec![NewRecord {
            kind: "key.created".to_owned(),
            payload: with_actor(key_json(&issued.key), actor),
            at: now,
        }])
        .await?;
        tx.commit().await?;
        Ok(issued)
    }

    /// Checks a presented key at `now`: one read by primary key, a
    /// constant-time comparison of hashes. Reads only; nothing is recorded.
    ///
    /// A key is accepted when its id and secret match a stored key that was
    /// never revoked and whose expiry, if any, is after `now`. Revocation
    /// wins over expiry when both apply.
    pub async fn authenticate(
        &self,
        presented: &str,
        now: UnixMicros,
    ) -> Result<KeyPrincipal, KeyError> {
        let (id, secret) = split_key(presented).ok_or(KeyError::Malformed)?;
        let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1");
        let row: Option<KeyRow> = on_pool!(self, |pool| {
            sqlx::query_as(&sql)
                .bind(id.as_str())
                .fetch_optional(pool)
                .await
                .map_err(StoreError::from)?
        });
        // Hash even when no row matches, so both cases take about as long.
        let presented_digest = key_digest(id.as_str(), secret);
        let Some(row) = row else {
            return Err(KeyError::Unknown { id });
        };
        let (key, stored_hash) = key_row(row)?;
        let stored = unhex(&stored_hash).ok_or_else(|| StoreError::Corrupt {
            what: format!("api key `{id}`"),
            detail: "the stored hash is not 64 hex characters".to_owned(),
        })?;
        if !bool::from(presented_digest.ct_eq(&stored)) {
            return Err(KeyError::Unknown { id });
        }
        if let Some(at) = key.revoked {
            return Err(KeyError::Revoked { id, at });
        }
        if let Some(at) = key.expires.filter(|&at| now >= at) {
            return Err(KeyError::Expired { id, at });
        }
        Ok(key.principal())
    }

    /// Every key (of one team, or of all), oldest first: ids, labels and
    /// instants, never secrets or hashes.
    pub async fn list_keys(&self, team: Option<&TeamName>) -> Result<Vec<ApiKey>, StoreError> {
        let sql = format!(
            "SELECT {KEY_COLUMNS} FROM api_keys \
             WHERE ($1 IS NULL OR team = $1) ORDER BY created_us, id"
        );
        let rows: Vec<KeyRow> = on_pool!(self, |pool| {
            sqlx::query_as(&sql)
                .bind(team.map(TeamName::as_str))
                .fetch_all(pool)
                .await?
        });
        rows.into_iter()
            .map(|row| key_row(row).map(|(key, _hash)| key))
            .collect()
    }

    /// The key `id`, if there is one (never its secret or hash).
    pub async fn get_key(&self, id: &ApiKeyId) -> Result<Option<ApiKey>, StoreError> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1");
        let row: Option<KeyRow> = on_pool!(self, |pool| {
            sqlx::query_as(&sql)
                .bind(id.as_str())
                .fetch_optional(pool)
                .await?
        });
        row.map(|row| key_row(row).map(|(key, _hash)| key))
            .transpose()
    }

    /// Revokes a key from `now` on, with a `key.revoked` audit record in the
    /// same transaction. Revoking a revoked key is an error
    /// ([`KeyAdminError::Revoked`] says when) and records nothing.
    pub async fn revoke_key(
        &self,
        id: &ApiKeyId,
        now: UnixMicros,
    ) -> Result<ApiKey, KeyAdminError> {
        self.revoke_key_by(id, None, now).await
    }

    /// [`Store::revoke_key`], with who asked in the audit record.
    pub async fn revoke_key_by(
        &self,
        id: &ApiKeyId,
        actor: Option<&str>,
        now: UnixMicros,
    ) -> Result<ApiKey, KeyAdminError> {
        let mut tx = self.begin_write().await?;
        let mut key = tx.key_for_update(id).await?;
        if let Some(at) = key.revoked {
            return Err(KeyAdminError::Revoked { id: id.clone(), at });
        }
        on_tx!(&mut tx, |conn| {
            sqlx::query("UPDATE api_keys SET revoked_us = $2 WHERE id = $1")
                .bind(id.as_str())
                .bind(now.micros())
                .execute(&mut *conn)
                .await
                .map_err(StoreError::from)?;
        });
        key.revoked = Some(now);
        tx.append_records(vec![NewRecord {
            kind: "key.revoked".to_owned(),
            payload: with_actor(key_json(&key), actor),
            at: now,
        }])
        .await?;
        tx.commit().await?;
        Ok(key)
    }

    /// Replaces a key: creates a new one with the same team, user and name,
    /// and makes the old one expire at `now + grace` (or keeps its earlier
    /// expiry), so holders have `grace` to switch. One transaction, with
    /// one `key.rotated` audit record naming both ids. A revoked key cannot
    /// be rotated; an expired one can (it stays expired).
    pub async fn rotate_key(
        &self,
        id: &ApiKeyId,
        grace: Duration,
        expiry: RotatedExpiry,
        now: UnixMicros,
    ) -> Result<Rotated, KeyAdminError> {
        let generated = generate_key()?;
        let mut tx = self.begin_write().await?;
        let mut old = tx.key_for_update(id).await?;
        if let Some(at) = old.revoked {
            return Err(KeyAdminError::Revoked { id: id.clone(), at });
        }
        let expires = match expiry {
            RotatedExpiry::Never => None,
            RotatedExpiry::At(at) => Some(at),
            RotatedExpiry::SameLifetime => old.expires.map(|e| {
                let lifetime = e.micros().saturating_sub(old.created.micros());
                UnixMicros::from_micros(now.micros().saturating_add(lifetime))
            }),
        };
        let new = NewKey {
            team: old.team.clone(),
            user: old.user.clone(),
            name: old.name.clone(),
            expires,
            role: old.role,
        };
        tx.insert_key(&generated, &new, now).await?;
        let grace_end = UnixMicros::from_micros(now.micros().saturating_add(micros(grace)));
        let old_expires = old.expires.map_or(grace_end, |e| e.min(grace_end));
        on_tx!(&mut tx, |conn| {
            sqlx::query("UPDATE api_keys SET expires_us = $2, rotated_to = $3 WHERE id = $1")
                .bind(id.as_str())
                .bind(old_expires.micros())
                .bind(generated.id.as_str())
                .execute(&mut *conn)
                .await
                .map_err(StoreError::from)?;
        });
        old.expires = Some(old_expires);
        old.rotated_to = Some(generated.id.clone());
        let new = issued(generated, new, now);
        let payload = json!({
            "key_id": old.id,
            "team": old.team,
            "user": old.user,
            "name": old.name,
            "old_expires_us": old.expires,
            "new_key_id": new.key.id,
            "new_expires_us": new.key.expires,
        });
        tx.append_records(vec![NewRecord {
            kind: "key.rotated".to_owned(),
            payload: payload.to_string(),
            at: now,
        }])
        .await?;
        tx.commit().await?;
        Ok(Rotated { old, new })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_have_the_documented_shape_and_differ() {
        let a = generate_key().unwrap();
        let b = generate_key().unwrap();
        let text = a.secret.expose();
        assert_eq!(text.len(), KEY_LEN);
        assert!(text.starts_with("wdn_"), "{text}");
        let (id, secret) = split_key(text).unwrap();
        assert_eq!(id, a.id);
        assert_eq!(key_hash(id.as_str(), secret), a.hash);
        assert_ne!(a.id, b.id);
        assert_ne!(a.secret, b.secret);
        assert_ne!(a.hash, b.hash);
        // The hash is not the secret, nor does it contain it.
        assert!(!a.hash.contains(secret));
    }

    #[test]
    fn hash_encoding_matches_the_documented_one() {
        // Computed independently with Python's hashlib from the module doc:
        // sha256(b"".join(len(s).to_bytes(8, "big") + s for s in parts)).
        let id = "0123456789abcdef";
        let secret = "ab".repeat(32);
        assert_eq!(
            key_hash(id, &secret),
            "94b6fa798dbad1760447927adb34f0c48a1783c115cc66fe3632f5fc1af2064c"
        );
    }

    #[test]
    fn only_the_exact_shape_is_a_key() {
        let ok = format!("wdn_{}_{}", "0".repeat(16), "f".repeat(64));
        assert!(split_key(&ok).is_some());
        for bad in [
            String::new(),
            format!("wdn_{}_{}", "0".repeat(16), "F".repeat(64)),
            format!("wdx_{}_{}", "0".repeat(16), "f".repeat(64)),
            format!("wdn_{}_{}", "0".repeat(15), "f".repeat(65)),
            format!("wdn_{}-{}", "0".repeat(16), "f".repeat(64)),
            format!("wdn_{}_{}", "0".repeat(16), "f".repeat(63)),
            format!(" wdn_{}_{}", "0".repeat(16), "f".repeat(63)),
            format!("wdn_{}_{}é", "0".repeat(16), "f".repeat(62)),
        ] {
            assert!(split_key(&bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let key = generate_key().unwrap();
        let shown = format!("{key:?}");
        assert!(shown.contains("[redacted]"), "{shown}");
        assert!(!shown.contains(key.secret.expose()), "{shown}");
    }

    #[test]
    fn hex_round_trips() {
        let bytes: [u8; 32] = std::array::from_fn(|i| u8::try_from(i * 7).unwrap());
        assert_eq!(unhex(&hex(&bytes)), Some(bytes));
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex(&"g".repeat(64)), None);
    }

    #[test]
    fn ids_names_and_users_are_parsed() {
        assert!(ApiKeyId::parse("0123456789abcdef").is_ok());
        let err = ApiKeyId::parse("wdn_0123").unwrap_err().to_string();
        assert!(
            err.contains("`wdn_0123`") && err.contains("16 lowercase hex"),
            "{err}"
        );
        assert!(KeyName::parse("ci runner").is_ok());
        assert!(KeyName::parse("").is_err());
        assert!(KeyName::parse(&"a".repeat(65)).is_err());
        let err = KeyUser::parse("al\nice").unwrap_err().to_string();
        assert!(
            err.contains(r"`al\nice`") && err.contains("control"),
            "{err}"
        );
    }

    #[test]
    fn state_prefers_revoked_then_expiry() {
        let key = ApiKey {
            id: ApiKeyId::parse("0123456789abcdef").unwrap(),
            name: None,
            team: TeamName::parse("ml").unwrap(),
            user: None,
            created: UnixMicros::from_micros(0),
            expires: Some(UnixMicros::from_micros(10)),
            revoked: None,
            rotated_to: None,
            role: Role::MlEngineer,
        };
        assert_eq!(key.state(UnixMicros::from_micros(9)), KeyState::Active);
        assert_eq!(key.state(UnixMicros::from_micros(10)), KeyState::Expired);
        let revoked = ApiKey {
            revoked: Some(UnixMicros::from_micros(5)),
            ..key
        };
        assert_eq!(revoked.state(UnixMicros::from_micros(1)), KeyState::Revoked);
        assert_eq!(
            revoked.state(UnixMicros::from_micros(11)),
            KeyState::Revoked
        );
    }
}
