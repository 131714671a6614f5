//! Users, API tokens, roles and grants (issue 17, part B): the security records, replicated
//! through Raft so that every node authenticates and authorizes every request from its own
//! applied state, and a change (a revoked token) holds on every node once applied there.
//!
//! **Roles.** A grant goes to a user or to a role; a user holds the grants of each role it
//! is assigned as its own (KurrentDB's groups in stream ACLs, Kafka's principals): grant
//! `read orders-` to role `reporting` once, assign and unassign people. One level only (a
//! role holds grants, not roles), so what a user may do is its grants and its roles' grants,
//! nothing to resolve. Admin through a role counts as admin: no change may leave the cluster
//! without one (`LastAdmin`), whichever way it would.
//!
//! **Where the state lives.** Like a stream's lifecycle (`lifecycle`), the whole state is the
//! JSON data of the last event of one system stream, [`AUTH_STREAM`]. It is then ordinary
//! append-only data: replicated, snapshotted and installed with the event groups with no new
//! code and no format change, and a retried change is recognised by its event id. Reads of
//! `$all`, the indexes and subscriptions never show it (`read`'s retention hides the stream
//! wholly): it holds password hashes. The cost: every change writes the whole state (bounded
//! by [`MAX_USERS`], [`MAX_TOKENS`] and [`MAX_GRANTS_PER_USER`], well under one event's limit),
//! and old states stay in the stream's history (hashes only, never a secret).
//!
//! **What is stored.** Passwords only as a slow hash (argon2 PHC strings, made by the node
//! before it proposes: a password never enters the Raft log), tokens only as the hex SHA-256
//! of the token (a token is 256 random bits, so a fast hash is enough and a lookup costs
//! microseconds; a slow hash per request would cost milliseconds). Hashing and checking are
//! the node's (`node/src/auth`); this module holds the records and the rules of change, which
//! must be deterministic: every replica applies the same change to the same state.
//!
//! Ground floor: imports nothing from the crate (`types` carries [`AuthCommand`] in `Command`).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The system stream whose last event holds the whole security state.
pub const AUTH_STREAM: &str = "$auth";
/// Event type of each state written to [`AUTH_STREAM`].
pub const AUTH_EVENT_TYPE: &str = "$auth-state";
/// Most users. At the limit, adding one is refused (`TooMany`).
pub const MAX_USERS: usize = 256;
/// Most tokens, all users together. At the limit, creating one is refused; revoke old ones.
pub const MAX_TOKENS: usize = 1_024;
/// Most grants one user holds. At the limit, a new grant is refused.
pub const MAX_GRANTS_PER_USER: usize = 64;
/// Most roles. At the limit, adding one is refused (`TooMany`).
pub const MAX_ROLES: usize = 64;
/// Most grants one role holds. At the limit, a new grant is refused.
pub const MAX_GRANTS_PER_ROLE: usize = 64;
/// Most roles one user is assigned. At the limit, assigning one more is refused.
pub const MAX_ROLES_PER_USER: usize = 16;
/// Longest user name, in bytes of UTF-8.
pub const MAX_USER_NAME_BYTES: usize = 64;
/// Longest stored secret hash (an argon2 PHC string is about 100 bytes; a SHA-256 hex 64).
pub const MAX_SECRET_HASH_BYTES: usize = 256;
/// Longest token id, in bytes.
pub const MAX_TOKEN_ID_BYTES: usize = 64;
/// Longest grant prefix, in bytes: a stream name's limit.
pub const MAX_GRANT_PREFIX_BYTES: usize = 255;
/// The grant prefix that covers every name, `$all`, the indexes and DCB included.
pub const EVERY_NAME: &str = "*";
/// The user the admin secret of `--admin-token-file` belongs to.
pub const BOOTSTRAP_USER: &str = "admin";
/// The id of the token made from the admin secret at bootstrap.
pub const BOOTSTRAP_TOKEN_ID: &str = "bootstrap";

/// What a grant allows on the names it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Read and subscribe (streams, `$all`, indexes, DCB queries).
    Read,
    /// Append (to streams; to `$dcb` for DCB events and conditions).
    Write,
    /// Change a stream's metadata, delete or tombstone it.
    Delete,
    /// Manage consumer groups.
    Groups,
    /// Everything, and alone: membership, users, tokens, grants, scavenge and erase. Only
    /// granted on [`EVERY_NAME`].
    Admin,
}

impl Action {
    pub const ALL: [Action; 5] = [
        Action::Read,
        Action::Write,
        Action::Delete,
        Action::Groups,
        Action::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Write => "write",
            Action::Delete => "delete",
            Action::Groups => "groups",
            Action::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == text)
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `action` on every name starting with `prefix` (or every name: [`EVERY_NAME`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Grant {
    pub action: Action,
    pub prefix: String,
}

impl Grant {
    /// Whether this grant allows `action` on `name`.
    pub fn allows(&self, action: Action, name: &str) -> bool {
        self.action == Action::Admin
            || (self.action == action
                && (self.prefix == EVERY_NAME || name.starts_with(self.prefix.as_str())))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// An argon2 PHC string; `None`: the user signs in with tokens only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<String>,
    #[serde(default)]
    pub grants: BTreeSet<Grant>,
    pub created_unix_ms: u64,
    /// The roles whose grants the user holds. Absent from states written before roles (and
    /// left out when empty, so such a state encodes as it did).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub roles: BTreeSet<String>,
}

/// A named set of grants that users are assigned.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    #[serde(default)]
    pub grants: BTreeSet<Grant>,
    pub created_unix_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    pub user: String,
    /// Lower-case hex SHA-256 of the token's text.
    pub hash: String,
    pub created_unix_ms: u64,
    /// After this (ms since the epoch, the node's clock when it checks), the token no longer
    /// authenticates; it stays listed until revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_unix_ms: Option<u64>,
}

/// The whole security state: what the last event of [`AUTH_STREAM`] holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthState {
    pub users: BTreeMap<String, User>,
    /// By token id.
    pub tokens: BTreeMap<String, Token>,
    /// Absent from states written before roles (and left out when empty).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub roles: BTreeMap<String, Role>,
}

/// One change of the security state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthChange {
    /// The first admin: [`BOOTSTRAP_USER`] with the admin grant and the token of the admin
    /// secret. Refused once any user exists, so every node may propose it and one wins.
    Bootstrap {
        token_hash: String,
    },
    AddUser {
        user: String,
        password_hash: Option<String>,
    },
    /// Removes the user, its tokens and grants; never the last admin.
    RemoveUser {
        user: String,
    },
    SetPassword {
        user: String,
        password_hash: String,
    },
    CreateToken {
        token_id: String,
        user: String,
        token_hash: String,
        expires_unix_ms: Option<u64>,
    },
    RevokeToken {
        token_id: String,
    },
    Grant {
        user: String,
        grant: Grant,
    },
    /// Takes a grant back; never the last admin's admin grant.
    Revoke {
        user: String,
        grant: Grant,
    },
    // Roles: new variants go at the end, so entries older builds logged decode as they did.
    AddRole {
        role: String,
    },
    /// Removes the role and takes it from every user; never when that leaves no admin.
    RemoveRole {
        role: String,
    },
    GrantRole {
        role: String,
        grant: Grant,
    },
    /// Takes a grant back from a role; never when that leaves no admin.
    RevokeRole {
        role: String,
        grant: Grant,
    },
    /// Gives the user the role's grants (again: nothing changes).
    AssignRole {
        user: String,
        role: String,
    },
    /// Takes the role from the user; never when that leaves no admin.
    UnassignRole {
        user: String,
        role: String,
    },
}

/// A change as the Raft log carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthCommand {
    pub change: AuthChange,
    /// The id of the `$auth` event that records the change: a retry is recognised by it.
    pub id: Uuid,
    /// Set once by the leader when it proposes.
    pub created_unix_ms: u64,
}

/// The verdict of an [`AuthCommand`], reached identically on every replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthResult {
    /// Applied; the state event's `$all` position.
    Done {
        position: u64,
    },
    /// A retry of a change already applied (its event id is stored): nothing written again.
    AlreadyDone {
        position: u64,
    },
    Refused(AuthRefusal),
}

/// Why a change was refused; nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum AuthRefusal {
    #[error("the cluster already has users: the admin secret is used only at bootstrap")]
    AlreadyInitialized,
    #[error("user {user:?} already exists")]
    UserExists { user: String },
    #[error("no user {user:?}")]
    NoSuchUser { user: String },
    #[error("token id {token_id:?} already exists")]
    TokenExists { token_id: String },
    #[error("no token {token_id:?}")]
    NoSuchToken { token_id: String },
    #[error("user {user:?} holds no grant {action} {prefix:?}")]
    NoSuchGrant {
        user: String,
        action: Action,
        prefix: String,
    },
    #[error("{user:?} is the last admin: make another admin first")]
    LastAdmin { user: String },
    #[error("role {role:?} already exists")]
    RoleExists { role: String },
    #[error("no role {role:?}")]
    NoSuchRole { role: String },
    #[error("role {role:?} holds no grant {action} {prefix:?}")]
    NoSuchRoleGrant {
        role: String,
        action: Action,
        prefix: String,
    },
    #[error("user {user:?} is not assigned role {role:?}")]
    RoleNotAssigned { user: String, role: String },
    #[error("at most {max} {what}")]
    TooMany { what: String, max: usize },
    #[error("{field}: {why}")]
    Invalid { field: String, why: String },
}

fn invalid(field: &str, why: impl Into<String>) -> AuthRefusal {
    AuthRefusal::Invalid {
        field: field.to_owned(),
        why: why.into(),
    }
}

/// A user name: 1..=`MAX_USER_NAME_BYTES` bytes of letters, digits, `-`, `_`, `.`, `@`.
pub fn validate_user_name(user: &str) -> Result<(), AuthRefusal> {
    if user.is_empty() || user.len() > MAX_USER_NAME_BYTES {
        return Err(invalid(
            "user",
            format!("a name is 1 to {MAX_USER_NAME_BYTES} bytes"),
        ));
    }
    if !user
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
    {
        return Err(invalid(
            "user",
            format!("{user:?}: letters, digits, '-', '_', '.' and '@' only"),
        ));
    }
    Ok(())
}

/// A role name: the same rule as a user name.
pub fn validate_role_name(role: &str) -> Result<(), AuthRefusal> {
    validate_user_name(role).map_err(|refusal| match refusal {
        AuthRefusal::Invalid { why, .. } => invalid("role", why),
        other => other,
    })
}

/// A grant: the admin action only on [`EVERY_NAME`]; a prefix 1..=`MAX_GRANT_PREFIX_BYTES`
/// bytes, no NUL.
pub fn validate_grant(grant: &Grant) -> Result<(), AuthRefusal> {
    let prefix = &grant.prefix;
    if prefix.is_empty() || prefix.len() > MAX_GRANT_PREFIX_BYTES || prefix.contains('\0') {
        return Err(invalid(
            "prefix",
            format!("1 to {MAX_GRANT_PREFIX_BYTES} bytes, no NUL ('*' for every name)"),
        ));
    }
    if grant.action == Action::Admin && prefix != EVERY_NAME {
        return Err(invalid(
            "prefix",
            "admin covers everything: grant it on '*'",
        ));
    }
    Ok(())
}

fn validate_hash(field: &str, hash: &str) -> Result<(), AuthRefusal> {
    if hash.is_empty() || hash.len() > MAX_SECRET_HASH_BYTES || !hash.is_ascii() {
        return Err(invalid(
            field,
            format!("1 to {MAX_SECRET_HASH_BYTES} ASCII bytes"),
        ));
    }
    Ok(())
}

fn validate_token_id(token_id: &str) -> Result<(), AuthRefusal> {
    if token_id.is_empty()
        || token_id.len() > MAX_TOKEN_ID_BYTES
        || !token_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(invalid(
            "token id",
            format!("1 to {MAX_TOKEN_ID_BYTES} bytes of letters, digits, '-' and '_'"),
        ));
    }
    Ok(())
}

impl AuthState {
    /// Whether any user exists: until then, only a bootstrap may change the state.
    pub fn is_initialized(&self) -> bool {
        !self.users.is_empty()
    }

    /// Whether `user` may do `action` on `name` (a stream name, `$all`, an index name such as
    /// `$ce-orders`, or `$dcb`): by a grant of its own or of one of its roles.
    pub fn allows(&self, user: &str, action: Action, name: &str) -> bool {
        self.users
            .get(user)
            .is_some_and(|u| self.grants_of(u).any(|g| g.allows(action, name)))
    }

    /// The user's grants and its roles' grants.
    pub fn grants_of<'a>(&'a self, user: &'a User) -> impl Iterator<Item = &'a Grant> + 'a {
        let from_roles = user
            .roles
            .iter()
            .filter_map(|role| self.roles.get(role))
            .flat_map(|role| role.grants.iter());
        user.grants.iter().chain(from_roles)
    }

    /// Whether `user` holds admin, by its own grant or a role's.
    pub fn is_admin(&self, user: &str) -> bool {
        self.users
            .get(user)
            .is_some_and(|u| self.grants_of(u).any(|g| g.action == Action::Admin))
    }

    /// The first admin of this state that `next` no longer has, when `next` has none: the
    /// change that made `next` is refused (`LastAdmin`) whichever way it took the last one.
    fn last_admin_lost(&self, next: &AuthState) -> Result<(), AuthRefusal> {
        if next.users.keys().any(|u| next.is_admin(u)) {
            return Ok(());
        }
        match self.users.keys().find(|u| self.is_admin(u)) {
            Some(user) => Err(AuthRefusal::LastAdmin { user: user.clone() }),
            None => Ok(()),
        }
    }

    fn role_mut(&mut self, role: &str) -> Result<&mut Role, AuthRefusal> {
        self.roles
            .get_mut(role)
            .ok_or_else(|| AuthRefusal::NoSuchRole {
                role: role.to_owned(),
            })
    }

    fn user_mut(&mut self, user: &str) -> Result<&mut User, AuthRefusal> {
        self.users
            .get_mut(user)
            .ok_or_else(|| AuthRefusal::NoSuchUser {
                user: user.to_owned(),
            })
    }

    fn add_token(&mut self, token_id: &str, token: Token) -> Result<(), AuthRefusal> {
        validate_token_id(token_id)?;
        validate_hash("token hash", &token.hash)?;
        if self.tokens.contains_key(token_id) {
            return Err(AuthRefusal::TokenExists {
                token_id: token_id.to_owned(),
            });
        }
        if self.tokens.len() >= MAX_TOKENS {
            return Err(AuthRefusal::TooMany {
                what: "tokens".into(),
                max: MAX_TOKENS,
            });
        }
        self.tokens.insert(token_id.to_owned(), token);
        Ok(())
    }

    /// This state with `change` made, or why it is refused. Deterministic: depends only on
    /// the state, the change and the command's time.
    pub fn changed(&self, change: &AuthChange, now_unix_ms: u64) -> Result<AuthState, AuthRefusal> {
        let mut next = self.clone();
        match change {
            AuthChange::Bootstrap { token_hash } => {
                if self.is_initialized() {
                    return Err(AuthRefusal::AlreadyInitialized);
                }
                let mut admin = User {
                    created_unix_ms: now_unix_ms,
                    ..User::default()
                };
                admin.grants.insert(Grant {
                    action: Action::Admin,
                    prefix: EVERY_NAME.to_owned(),
                });
                next.users.insert(BOOTSTRAP_USER.to_owned(), admin);
                next.add_token(
                    BOOTSTRAP_TOKEN_ID,
                    Token {
                        user: BOOTSTRAP_USER.to_owned(),
                        hash: token_hash.clone(),
                        created_unix_ms: now_unix_ms,
                        expires_unix_ms: None,
                    },
                )?;
                return Ok(next);
            }
            _ if !self.is_initialized() => {
                return Err(invalid(
                    "state",
                    "no admin yet: the cluster is bootstrapped with --admin-token-file first",
                ))
            }
            AuthChange::AddUser {
                user,
                password_hash,
            } => {
                validate_user_name(user)?;
                if let Some(hash) = password_hash {
                    validate_hash("password hash", hash)?;
                }
                if self.users.contains_key(user) {
                    return Err(AuthRefusal::UserExists { user: user.clone() });
                }
                if self.users.len() >= MAX_USERS {
                    return Err(AuthRefusal::TooMany {
                        what: "users".into(),
                        max: MAX_USERS,
                    });
                }
                next.users.insert(
                    user.clone(),
                    User {
                        password_hash: password_hash.clone(),
                        grants: BTreeSet::new(),
                        created_unix_ms: now_unix_ms,
                        roles: BTreeSet::new(),
                    },
                );
            }
            AuthChange::RemoveUser { user } => {
                if next.users.remove(user).is_none() {
                    return Err(AuthRefusal::NoSuchUser { user: user.clone() });
                }
                self.last_admin_lost(&next)?;
                next.tokens.retain(|_, t| &t.user != user);
            }
            AuthChange::SetPassword {
                user,
                password_hash,
            } => {
                validate_hash("password hash", password_hash)?;
                next.user_mut(user)?.password_hash = Some(password_hash.clone());
            }
            AuthChange::CreateToken {
                token_id,
                user,
                token_hash,
                expires_unix_ms,
            } => {
                if !self.users.contains_key(user) {
                    return Err(AuthRefusal::NoSuchUser { user: user.clone() });
                }
                next.add_token(
                    token_id,
                    Token {
                        user: user.clone(),
                        hash: token_hash.clone(),
                        created_unix_ms: now_unix_ms,
                        expires_unix_ms: *expires_unix_ms,
                    },
                )?;
            }
            AuthChange::RevokeToken { token_id } => {
                if next.tokens.remove(token_id).is_none() {
                    return Err(AuthRefusal::NoSuchToken {
                        token_id: token_id.clone(),
                    });
                }
            }
            AuthChange::Grant { user, grant } => {
                validate_grant(grant)?;
                let held = next.user_mut(user)?;
                if !held.grants.contains(grant) && held.grants.len() >= MAX_GRANTS_PER_USER {
                    return Err(AuthRefusal::TooMany {
                        what: format!("grants per user ({user:?} holds them)"),
                        max: MAX_GRANTS_PER_USER,
                    });
                }
                held.grants.insert(grant.clone());
            }
            AuthChange::Revoke { user, grant } => {
                let held = next.user_mut(user)?;
                if !held.grants.remove(grant) {
                    return Err(AuthRefusal::NoSuchGrant {
                        user: user.clone(),
                        action: grant.action,
                        prefix: grant.prefix.clone(),
                    });
                }
                self.last_admin_lost(&next)?;
            }
            AuthChange::AddRole { role } => {
                validate_role_name(role)?;
                if self.roles.contains_key(role) {
                    return Err(AuthRefusal::RoleExists { role: role.clone() });
                }
                if self.roles.len() >= MAX_ROLES {
                    return Err(AuthRefusal::TooMany {
                        what: "roles".into(),
                        max: MAX_ROLES,
                    });
                }
                next.roles.insert(
                    role.clone(),
                    Role {
                        grants: BTreeSet::new(),
                        created_unix_ms: now_unix_ms,
                    },
                );
            }
            AuthChange::RemoveRole { role } => {
                if next.roles.remove(role).is_none() {
                    return Err(AuthRefusal::NoSuchRole { role: role.clone() });
                }
                for user in next.users.values_mut() {
                    user.roles.remove(role);
                }
                self.last_admin_lost(&next)?;
            }
            AuthChange::GrantRole { role, grant } => {
                validate_grant(grant)?;
                let held = next.role_mut(role)?;
                if !held.grants.contains(grant) && held.grants.len() >= MAX_GRANTS_PER_ROLE {
                    return Err(AuthRefusal::TooMany {
                        what: format!("grants per role ({role:?} holds them)"),
                        max: MAX_GRANTS_PER_ROLE,
                    });
                }
                held.grants.insert(grant.clone());
            }
            AuthChange::RevokeRole { role, grant } => {
                if !next.role_mut(role)?.grants.remove(grant) {
                    return Err(AuthRefusal::NoSuchRoleGrant {
                        role: role.clone(),
                        action: grant.action,
                        prefix: grant.prefix.clone(),
                    });
                }
                self.last_admin_lost(&next)?;
            }
            AuthChange::AssignRole { user, role } => {
                if !self.roles.contains_key(role) {
                    return Err(AuthRefusal::NoSuchRole { role: role.clone() });
                }
                let held = next.user_mut(user)?;
                if !held.roles.contains(role) && held.roles.len() >= MAX_ROLES_PER_USER {
                    return Err(AuthRefusal::TooMany {
                        what: format!("roles per user ({user:?} holds them)"),
                        max: MAX_ROLES_PER_USER,
                    });
                }
                held.roles.insert(role.clone());
            }
            AuthChange::UnassignRole { user, role } => {
                if !next.user_mut(user)?.roles.remove(role) {
                    return Err(AuthRefusal::RoleNotAssigned {
                        user: user.clone(),
                        role: role.clone(),
                    });
                }
                self.last_admin_lost(&next)?;
            }
        }
        Ok(next)
    }

    pub fn encode(&self) -> Vec<u8> {
        // A map of strings and numbers always serializes.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<AuthState, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

impl std::fmt::Display for AuthChange {
    /// One line for logs and openraft's entry display: never a hash.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthChange::Bootstrap { .. } => write!(f, "bootstrap of the admin"),
            AuthChange::AddUser { user, .. } => write!(f, "user add {user}"),
            AuthChange::RemoveUser { user } => write!(f, "user remove {user}"),
            AuthChange::SetPassword { user, .. } => write!(f, "password of {user}"),
            AuthChange::CreateToken { token_id, user, .. } => {
                write!(f, "token create {token_id} for {user}")
            }
            AuthChange::RevokeToken { token_id } => write!(f, "token revoke {token_id}"),
            AuthChange::Grant { user, grant } => {
                write!(f, "grant {user} {} {}", grant.action, grant.prefix)
            }
            AuthChange::Revoke { user, grant } => {
                write!(f, "revoke {user} {} {}", grant.action, grant.prefix)
            }
            AuthChange::AddRole { role } => write!(f, "role add {role}"),
            AuthChange::RemoveRole { role } => write!(f, "role remove {role}"),
            AuthChange::GrantRole { role, grant } => {
                write!(f, "role grant {role} {} {}", grant.action, grant.prefix)
            }
            AuthChange::RevokeRole { role, grant } => {
                write!(f, "role revoke {role} {} {}", grant.action, grant.prefix)
            }
            AuthChange::AssignRole { user, role } => write!(f, "role assign {user} {role}"),
            AuthChange::UnassignRole { user, role } => {
                write!(f, "role unassign {user} {role}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bootstrapped() -> AuthState {
        AuthState::default()
            .changed(
                &AuthChange::Bootstrap {
                    token_hash: "ab".repeat(32),
                },
                1,
            )
            .expect("bootstrap")
    }

    fn grant(action: Action, prefix: &str) -> Grant {
        Grant {
            action,
            prefix: prefix.to_owned(),
        }
    }

    #[test]
    fn bootstrap_makes_one_admin_once() {
        let state = bootstrapped();
        assert!(state.allows(BOOTSTRAP_USER, Action::Admin, "anything"));
        assert!(state.allows(BOOTSTRAP_USER, Action::Write, "orders-1"));
        assert_eq!(
            state.changed(
                &AuthChange::Bootstrap {
                    token_hash: "cd".repeat(32)
                },
                2
            ),
            Err(AuthRefusal::AlreadyInitialized)
        );
    }

    #[test]
    fn grants_cover_their_prefix_and_action_only() {
        let mut state = bootstrapped();
        for change in [
            AuthChange::AddUser {
                user: "alice".into(),
                password_hash: None,
            },
            AuthChange::Grant {
                user: "alice".into(),
                grant: grant(Action::Read, "orders-"),
            },
        ] {
            state = state.changed(&change, 2).expect("change");
        }
        assert!(state.allows("alice", Action::Read, "orders-1"));
        assert!(!state.allows("alice", Action::Write, "orders-1"));
        assert!(!state.allows("alice", Action::Read, "invoices-1"));
        assert!(!state.allows("alice", Action::Read, "$all"));
        assert!(!state.allows("bob", Action::Read, "orders-1"));
        let every = state
            .changed(
                &AuthChange::Grant {
                    user: "alice".into(),
                    grant: grant(Action::Read, EVERY_NAME),
                },
                3,
            )
            .expect("grant");
        assert!(every.allows("alice", Action::Read, "$all"));
    }

    #[test]
    fn the_last_admin_cannot_be_removed_or_demoted() {
        let state = bootstrapped();
        assert!(matches!(
            state.changed(
                &AuthChange::RemoveUser {
                    user: BOOTSTRAP_USER.into()
                },
                2
            ),
            Err(AuthRefusal::LastAdmin { .. })
        ));
        assert!(matches!(
            state.changed(
                &AuthChange::Revoke {
                    user: BOOTSTRAP_USER.into(),
                    grant: grant(Action::Admin, EVERY_NAME)
                },
                2
            ),
            Err(AuthRefusal::LastAdmin { .. })
        ));
    }

    #[test]
    fn removing_a_user_revokes_its_tokens_and_bad_input_is_refused() {
        let mut state = bootstrapped();
        for change in [
            AuthChange::AddUser {
                user: "bob".into(),
                password_hash: None,
            },
            AuthChange::CreateToken {
                token_id: "t1".into(),
                user: "bob".into(),
                token_hash: "ef".repeat(32),
                expires_unix_ms: None,
            },
            AuthChange::RemoveUser { user: "bob".into() },
        ] {
            state = state.changed(&change, 2).expect("change");
        }
        assert!(!state.tokens.contains_key("t1"));
        let bad = [
            AuthChange::AddUser {
                user: "has space".into(),
                password_hash: None,
            },
            AuthChange::Grant {
                user: BOOTSTRAP_USER.into(),
                grant: grant(Action::Admin, "orders-"),
            },
            AuthChange::Grant {
                user: BOOTSTRAP_USER.into(),
                grant: grant(Action::Read, ""),
            },
            AuthChange::RevokeToken {
                token_id: "nope".into(),
            },
        ];
        for change in bad {
            assert!(state.changed(&change, 3).is_err(), "{change}");
        }
    }

    #[test]
    fn nothing_but_a_bootstrap_changes_an_empty_state() {
        let refused = AuthState::default().changed(
            &AuthChange::AddUser {
                user: "eve".into(),
                password_hash: None,
            },
            1,
        );
        assert!(matches!(refused, Err(AuthRefusal::Invalid { .. })));
    }

    /// Applies `changes` in order, each required to be accepted.
    fn after(mut state: AuthState, changes: &[AuthChange]) -> AuthState {
        for change in changes {
            state = state
                .changed(change, 5)
                .unwrap_or_else(|e| panic!("{change}: {e}"));
        }
        state
    }

    fn add_user(user: &str) -> AuthChange {
        AuthChange::AddUser {
            user: user.into(),
            password_hash: None,
        }
    }

    #[test]
    fn a_user_holds_its_roles_grants_while_assigned() {
        let state = after(
            bootstrapped(),
            &[
                add_user("alice"),
                AuthChange::AddRole {
                    role: "reporting".into(),
                },
                AuthChange::GrantRole {
                    role: "reporting".into(),
                    grant: grant(Action::Read, "orders-"),
                },
            ],
        );
        assert!(!state.allows("alice", Action::Read, "orders-1"));
        let assigned = after(
            state.clone(),
            &[AuthChange::AssignRole {
                user: "alice".into(),
                role: "reporting".into(),
            }],
        );
        assert!(assigned.allows("alice", Action::Read, "orders-1"));
        assert!(!assigned.allows("alice", Action::Write, "orders-1"));
        assert!(!assigned.allows("alice", Action::Read, "invoices-1"));
        // A grant to the role reaches its members at once; its revoke takes it back.
        let more = after(
            assigned.clone(),
            &[AuthChange::GrantRole {
                role: "reporting".into(),
                grant: grant(Action::Read, "invoices-"),
            }],
        );
        assert!(more.allows("alice", Action::Read, "invoices-1"));
        let revoked = after(
            more,
            &[AuthChange::RevokeRole {
                role: "reporting".into(),
                grant: grant(Action::Read, "invoices-"),
            }],
        );
        assert!(!revoked.allows("alice", Action::Read, "invoices-1"));
        // Unassigned, or the role removed: nothing left.
        for change in [
            AuthChange::UnassignRole {
                user: "alice".into(),
                role: "reporting".into(),
            },
            AuthChange::RemoveRole {
                role: "reporting".into(),
            },
        ] {
            let without = after(revoked.clone(), std::slice::from_ref(&change));
            assert!(
                !without.allows("alice", Action::Read, "orders-1"),
                "{change}"
            );
            assert!(without.users["alice"].roles.is_empty(), "{change}");
        }
    }

    #[test]
    fn no_role_change_leaves_the_cluster_without_an_admin() {
        // The admin role is the only way anyone is admin.
        let state = after(
            bootstrapped(),
            &[
                add_user("ops"),
                AuthChange::AddRole {
                    role: "admins".into(),
                },
                AuthChange::GrantRole {
                    role: "admins".into(),
                    grant: grant(Action::Admin, EVERY_NAME),
                },
                AuthChange::AssignRole {
                    user: "ops".into(),
                    role: "admins".into(),
                },
                AuthChange::RemoveUser {
                    user: BOOTSTRAP_USER.into(),
                },
            ],
        );
        assert!(state.is_admin("ops"));
        for change in [
            AuthChange::UnassignRole {
                user: "ops".into(),
                role: "admins".into(),
            },
            AuthChange::RemoveRole {
                role: "admins".into(),
            },
            AuthChange::RevokeRole {
                role: "admins".into(),
                grant: grant(Action::Admin, EVERY_NAME),
            },
            AuthChange::RemoveUser { user: "ops".into() },
        ] {
            assert_eq!(
                state.changed(&change, 6),
                Err(AuthRefusal::LastAdmin { user: "ops".into() }),
                "{change}"
            );
        }
    }

    #[test]
    fn bad_role_changes_are_refused_and_change_nothing() {
        let state = after(
            bootstrapped(),
            &[
                add_user("alice"),
                AuthChange::AddRole {
                    role: "reporting".into(),
                },
            ],
        );
        let bad = [
            (
                AuthChange::AddRole {
                    role: "reporting".into(),
                },
                "exists",
            ),
            (AuthChange::AddRole { role: "".into() }, "empty name"),
            (
                AuthChange::AddRole {
                    role: "has space".into(),
                },
                "bad name",
            ),
            (
                AuthChange::RemoveRole {
                    role: "nope".into(),
                },
                "no such role",
            ),
            (
                AuthChange::GrantRole {
                    role: "nope".into(),
                    grant: grant(Action::Read, "a"),
                },
                "grant to no role",
            ),
            (
                AuthChange::GrantRole {
                    role: "reporting".into(),
                    grant: grant(Action::Admin, "orders-"),
                },
                "admin on a prefix",
            ),
            (
                AuthChange::RevokeRole {
                    role: "reporting".into(),
                    grant: grant(Action::Read, "a"),
                },
                "a grant it does not hold",
            ),
            (
                AuthChange::AssignRole {
                    user: "alice".into(),
                    role: "nope".into(),
                },
                "assign of no role",
            ),
            (
                AuthChange::AssignRole {
                    user: "bob".into(),
                    role: "reporting".into(),
                },
                "assign to no user",
            ),
            (
                AuthChange::UnassignRole {
                    user: "alice".into(),
                    role: "reporting".into(),
                },
                "unassign of a role not held",
            ),
        ];
        for (change, why) in bad {
            assert!(state.changed(&change, 6).is_err(), "{why}: {change}");
        }
        let mut full = state.clone();
        for n in full.roles.len()..MAX_ROLES {
            full = after(
                full,
                &[AuthChange::AddRole {
                    role: format!("r{n}"),
                }],
            );
        }
        assert!(matches!(
            full.changed(
                &AuthChange::AddRole {
                    role: "one-more".into()
                },
                7
            ),
            Err(AuthRefusal::TooMany { .. })
        ));
    }

    #[test]
    fn a_state_without_roles_encodes_as_before_roles() {
        let state = bootstrapped();
        let json = String::from_utf8(state.encode()).expect("utf-8");
        assert!(!json.contains("roles"), "{json}");
        let old = r#"{"users":{"admin":{"grants":[{"action":"admin","prefix":"*"}],"created_unix_ms":1}},"tokens":{}}"#;
        let decoded = AuthState::decode(old.as_bytes()).expect("a state from before roles");
        assert!(decoded.roles.is_empty() && decoded.is_admin("admin"));
    }
}
