//! `cairn.v1.Auth`: users, tokens, roles and grants (admins only: the gate in `auth::layer` lets no
//! one else in). A change is made on the leader: passwords are hashed and tokens made there
//! (a password never enters the Raft log, only its argon2 hash; a token only as its SHA-256),
//! then proposed as one `Command::Auth` entry. A follower forwards the request as it came
//! (over mutual TLS, as a node). Lists come from the receiving node's applied state.

use std::sync::Arc;
use std::time::Duration;

use cairn_client::proto;
use cairn_client::proto::auth_change_request::Change as ProtoChange;
use cairn_client::proto::auth_client::AuthClient;
use cairn_client::proto::auth_server::Auth as AuthRpc;
use cairn_raft_store::auth::{
    validate_role_name, validate_user_name, Action, AuthChange, AuthCommand, AuthRefusal,
    AuthResult, Grant,
};
use cairn_raft_store::{Command, Response as StoreResponse};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::deadlines::APPEND_TIMEOUT_MS;
use super::group_commit::GroupError;
use super::lifecycle::propose;
use super::status::{self, invalid};
use super::{not_leader, NodeContext, MAX_CLIENT_MESSAGE_BYTES};
use crate::auth::secrets::{self, MAX_PASSWORD_BYTES, MIN_PASSWORD_BYTES};
use crate::error::NodeError;

/// Longest token lifetime asked for: 10 years (beyond it, a token is meant to never expire: 0).
pub const MAX_TOKEN_LIFETIME_SECS: u64 = 10 * 365 * 24 * 3600;

pub struct AuthService {
    ctx: Arc<NodeContext>,
}

impl AuthService {
    pub fn new(ctx: Arc<NodeContext>) -> Self {
        AuthService { ctx }
    }

    async fn forward(
        &self,
        request: proto::AuthChangeRequest,
    ) -> Result<proto::AuthChangeResponse, Status> {
        let Some((leader, addr)) = self.ctx.leader() else {
            return Err(NodeError::NoLeaderKnown.into());
        };
        if leader == self.ctx.id {
            return Err(NodeError::LeadershipChanging.into());
        }
        let mut client = AuthClient::new(self.ctx.channel(&addr)?)
            .max_decoding_message_size(MAX_CLIENT_MESSAGE_BYTES);
        let reply = tokio::time::timeout(
            Duration::from_millis(APPEND_TIMEOUT_MS),
            client.change_auth(request),
        )
        .await
        .map_err(|_| NodeError::LeaderTimedOut { leader })??;
        Ok(reply.into_inner())
    }
}

fn password(field: &str, password: &str) -> Result<(), Status> {
    if password.len() < MIN_PASSWORD_BYTES || password.len() > MAX_PASSWORD_BYTES {
        return Err(invalid(
            field,
            format!("a password is {MIN_PASSWORD_BYTES} to {MAX_PASSWORD_BYTES} bytes"),
        ));
    }
    Ok(())
}

async fn hash(password: String) -> Result<String, Status> {
    tokio::task::spawn_blocking(move || secrets::hash_password(&password))
        .await
        .map_err(|e| Status::internal(format!("password hashing: {e}")))?
        .map_err(|e| Status::internal(e.to_string()))
}

/// Whom a grant change names: a user or a role.
enum Grantee {
    User(String),
    Role(String),
}

fn grant(change: proto::GrantChange) -> Result<(Grantee, Grant), Status> {
    let action = Action::parse(&change.action).ok_or_else(|| {
        invalid(
            "action",
            format!(
                "{:?}: one of read, write, delete, groups, admin",
                change.action
            ),
        )
    })?;
    let grantee = match (change.user.is_empty(), change.role.is_empty()) {
        (false, true) => Grantee::User(change.user),
        (true, false) => Grantee::Role(change.role),
        _ => return Err(invalid("user", "name a user or a role, not both")),
    };
    Ok((
        grantee,
        Grant {
            action,
            prefix: change.prefix,
        },
    ))
}

fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The change as the log carries it: hashed, a token made. Bad input is refused here, before
/// anything is proposed (the state machine checks again at apply).
async fn to_change(
    change: ProtoChange,
    now_unix_ms: u64,
) -> Result<(AuthChange, Option<String>), Status> {
    let refusal = |r: AuthRefusal| refusal_status(&r);
    Ok(match change {
        ProtoChange::AddUser(add) => {
            validate_user_name(&add.user).map_err(refusal)?;
            let password_hash = if add.password.is_empty() {
                None
            } else {
                password("password", &add.password)?;
                Some(hash(add.password).await?)
            };
            (
                AuthChange::AddUser {
                    user: add.user,
                    password_hash,
                },
                None,
            )
        }
        ProtoChange::RemoveUser(user) => (AuthChange::RemoveUser { user }, None),
        ProtoChange::SetPassword(set) => {
            password("password", &set.password)?;
            (
                AuthChange::SetPassword {
                    user: set.user,
                    password_hash: hash(set.password).await?,
                },
                None,
            )
        }
        ProtoChange::CreateToken(create) => {
            if create.expires_in_secs > MAX_TOKEN_LIFETIME_SECS {
                return Err(invalid(
                    "expires_in_secs",
                    format!("at most {MAX_TOKEN_LIFETIME_SECS} (0: never)"),
                ));
            }
            let (token, token_id) =
                secrets::new_token().map_err(|e| Status::internal(e.to_string()))?;
            let expires_unix_ms = (create.expires_in_secs > 0)
                .then(|| now_unix_ms.saturating_add(create.expires_in_secs * 1000));
            (
                AuthChange::CreateToken {
                    token_id,
                    user: create.user,
                    token_hash: secrets::token_hash(&token),
                    expires_unix_ms,
                },
                Some(token),
            )
        }
        ProtoChange::RevokeToken(token_id) => (AuthChange::RevokeToken { token_id }, None),
        ProtoChange::Grant(change) => {
            let (grantee, grant) = grant(change)?;
            cairn_raft_store::auth::validate_grant(&grant).map_err(refusal)?;
            let change = match grantee {
                Grantee::User(user) => AuthChange::Grant { user, grant },
                Grantee::Role(role) => AuthChange::GrantRole { role, grant },
            };
            (change, None)
        }
        ProtoChange::Revoke(change) => {
            let change = match grant(change)? {
                (Grantee::User(user), grant) => AuthChange::Revoke { user, grant },
                (Grantee::Role(role), grant) => AuthChange::RevokeRole { role, grant },
            };
            (change, None)
        }
        ProtoChange::AddRole(role) => {
            validate_role_name(&role).map_err(refusal)?;
            (AuthChange::AddRole { role }, None)
        }
        ProtoChange::RemoveRole(role) => (AuthChange::RemoveRole { role }, None),
        ProtoChange::AssignRole(member) => (
            AuthChange::AssignRole {
                user: member.user,
                role: member.role,
            },
            None,
        ),
        ProtoChange::UnassignRole(member) => (
            AuthChange::UnassignRole {
                user: member.user,
                role: member.role,
            },
            None,
        ),
    })
}

/// A refused change as a status: INVALID_ARGUMENT with the reason (bad input, a user that
/// exists or does not, the last admin, a limit), so that no client retries it; nothing
/// changed.
fn refusal_status(refusal: &AuthRefusal) -> Status {
    Status::invalid_argument(refusal.to_string())
}

#[tonic::async_trait]
impl AuthRpc for AuthService {
    async fn change_auth(
        &self,
        request: Request<proto::AuthChangeRequest>,
    ) -> Result<Response<proto::AuthChangeResponse>, Status> {
        let request = request.into_inner();
        self.ctx.refuse_unless_member()?;
        if self.ctx.auth.is_none() {
            return Err(Status::failed_precondition(
                "this node runs --insecure: it has no users, tokens or grants",
            ));
        }
        let leading = self.ctx.leader().is_some_and(|(id, _)| id == self.ctx.id);
        if !leading {
            if self.ctx.leader().is_none() {
                return Err(not_leader(&self.ctx));
            }
            return self.forward(request).await.map(Response::new);
        }
        let Some(change) = request.change else {
            return Err(invalid("change", "no change given"));
        };
        let now = now_unix_ms();
        let (change, token) = to_change(change, now).await?;
        let token_id = match &change {
            AuthChange::CreateToken { token_id, .. } => token_id.clone(),
            _ => String::new(),
        };
        let what = change.to_string();
        let command = Command::Auth(AuthCommand {
            change,
            id: Uuid::now_v7(),
            created_unix_ms: now,
        });
        match propose(&self.ctx, command).await?.1 {
            StoreResponse::Auth(AuthResult::Done { .. } | AuthResult::AlreadyDone { .. }) => {
                tracing::info!(target: "cairn::audit", node = self.ctx.id, change = %what, "security state changed");
                Ok(Response::new(proto::AuthChangeResponse {
                    token: token.unwrap_or_default(),
                    token_id,
                }))
            }
            StoreResponse::Auth(AuthResult::Refused(refusal)) => Err(refusal_status(&refusal)),
            _ => Err(status::status(&GroupError::NoResult)),
        }
    }

    async fn list_auth(
        &self,
        _request: Request<proto::ListAuthRequest>,
    ) -> Result<Response<proto::ListAuthResponse>, Status> {
        self.ctx.refuse_unless_member()?;
        let Some(auth) = &self.ctx.auth else {
            return Err(Status::failed_precondition(
                "this node runs --insecure: it has no users, tokens or grants",
            ));
        };
        let state = auth.state()?;
        let grants = |grants: &std::collections::BTreeSet<Grant>| {
            grants
                .iter()
                .map(|g| proto::GrantInfo {
                    action: g.action.to_string(),
                    prefix: g.prefix.clone(),
                })
                .collect()
        };
        let users = state
            .users
            .iter()
            .map(|(name, user)| proto::UserInfo {
                name: name.clone(),
                has_password: user.password_hash.is_some(),
                grants: grants(&user.grants),
                roles: user.roles.iter().cloned().collect(),
            })
            .collect();
        let roles = state
            .roles
            .iter()
            .map(|(name, role)| proto::RoleInfo {
                name: name.clone(),
                grants: grants(&role.grants),
                members: state
                    .users
                    .iter()
                    .filter(|(_, user)| user.roles.contains(name))
                    .map(|(user, _)| user.clone())
                    .collect(),
            })
            .collect();
        let tokens = state
            .tokens
            .iter()
            .map(|(id, token)| proto::TokenInfo {
                id: id.clone(),
                user: token.user.clone(),
                created_unix_ms: token.created_unix_ms,
                expires_unix_ms: token.expires_unix_ms.unwrap_or(0),
            })
            .collect();
        Ok(Response::new(proto::ListAuthResponse {
            users,
            tokens,
            roles,
        }))
    }
}

/// Proposes the first admin from this node's admin secret, once: while the applied state has
/// no users, whenever this node leads (any node given the secret may; the first applied wins,
/// the others are refused as `AlreadyInitialized`). Ends once the state has users, warning if
/// this node's secret is not the one that made the admin.
pub fn start_bootstrap(ctx: Arc<NodeContext>, secret: String) {
    let hash = secrets::token_hash(&secret);
    tokio::spawn(async move {
        let Some(auth) = ctx.auth.clone() else { return };
        loop {
            match auth.state() {
                Ok(state) if state.is_initialized() => {
                    let ours = state.tokens.values().any(|t| t.hash == hash);
                    if !ours {
                        tracing::warn!(
                            node = ctx.id,
                            "the cluster's admin was made from another admin secret: this node's --admin-token-file does not sign in"
                        );
                    }
                    return;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(node = ctx.id, error = %e, "reading the security state"),
            }
            if ctx.leader().is_some_and(|(id, _)| id == ctx.id) {
                let command = Command::Auth(AuthCommand {
                    change: AuthChange::Bootstrap {
                        token_hash: hash.clone(),
                    },
                    id: Uuid::now_v7(),
                    created_unix_ms: now_unix_ms(),
                });
                match propose(&ctx, command).await {
                    Ok((_, StoreResponse::Auth(AuthResult::Done { .. }))) => {
                        tracing::info!(target: "cairn::audit", node = ctx.id, "admin bootstrapped from the admin secret");
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!(node = ctx.id, error = %e, "bootstrap of the admin"),
                }
            }
            tokio::time::sleep(Duration::from_millis(BOOTSTRAP_CHECK_INTERVAL_MS)).await;
        }
    });
}

/// How often a node with an admin secret looks whether the admin is bootstrapped yet.
pub const BOOTSTRAP_CHECK_INTERVAL_MS: u64 = 200;
