//! Authentication and authorization of the public API (issue 17, part B).
//!
//! One place: [`layer`] wraps the public services, authenticates every call from this node's
//! own applied security state (`cairn_raft_store::auth`, cached in an `AuthView`) and applies
//! the per-method rule ([`layer::rule`]); the handlers of calls that name streams ask
//! [`check`] for the action on each name. A node started `--insecure` has no [`Auth`] in
//! force: nothing is checked (and it says so loudly at start).
//!
//! Who may call: a connection that presented a certificate of the cluster's CA is a node
//! (forwarded writes, status and membership checks between members: the follower already
//! checked its caller); anyone else presents `Bearer TOKEN` or `Basic user:password`.
//!
//! Denials and admin actions are logged as one structured line each, target `cairn::audit`.

pub mod layer;
pub mod secrets;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

pub use cairn_raft_store::auth::Action;
use cairn_raft_store::auth::AuthState;
use cairn_raft_store::AuthView;
use tonic::Status;

use secrets::Presented;

/// Passwords whose argon2 check passed, remembered (by user and the password's SHA-256,
/// against the stored hash they matched) so that Basic credentials on every call cost one
/// argon2 check per user, not one per call. Past the limit the memory is cleared.
pub const MAX_CACHED_PASSWORDS: usize = 1_024;
/// argon2 checks running at once; more calls with passwords wait for a slot (each check
/// takes ~19 MiB and tens of ms).
pub const MAX_CONCURRENT_PASSWORD_CHECKS: usize = 4;

/// Who a call comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A connection with a certificate of the cluster's CA: another node.
    Node,
    User(String),
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Principal::Node => f.write_str("a cluster node"),
            Principal::User(user) => write!(f, "user {user:?}"),
        }
    }
}

/// Token lookups by hash, built once per generation of the state.
struct TokenIndex {
    generation: u64,
    state: Arc<AuthState>,
    by_hash: HashMap<String, String>,
}

/// Authentication and authorization in force on a node.
pub struct Auth {
    view: AuthView,
    tokens: RwLock<Option<Arc<TokenIndex>>>,
    passwords: Mutex<HashMap<(String, String), String>>,
    password_checks: tokio::sync::Semaphore,
}

impl Auth {
    pub fn new(view: AuthView) -> Arc<Auth> {
        Arc::new(Auth {
            view,
            tokens: RwLock::new(None),
            passwords: Mutex::new(HashMap::new()),
            password_checks: tokio::sync::Semaphore::new(MAX_CONCURRENT_PASSWORD_CHECKS),
        })
    }

    /// The applied state and its token index (rebuilt when the state changed).
    fn index(&self) -> Result<Arc<TokenIndex>, Status> {
        let generation = self.view.generation();
        if let Some(index) = self
            .tokens
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            if index.generation == generation {
                return Ok(index.clone());
            }
        }
        let state = self
            .view
            .current()
            .map_err(|e| Status::internal(format!("reading the security state: {e}")))?;
        let by_hash = state
            .tokens
            .iter()
            .map(|(id, token)| (token.hash.clone(), id.clone()))
            .collect();
        let index = Arc::new(TokenIndex {
            generation,
            state,
            by_hash,
        });
        *self.tokens.write().unwrap_or_else(|p| p.into_inner()) = Some(index.clone());
        Ok(index)
    }

    /// The applied security state.
    pub fn state(&self) -> Result<Arc<AuthState>, Status> {
        Ok(self.index()?.state.clone())
    }

    /// Who presents `header` (the `authorization` value), on a connection that did or did
    /// not present a node certificate.
    pub async fn authenticate(
        &self,
        header: Option<&[u8]>,
        node_certificate: bool,
        now_unix_ms: u64,
    ) -> Result<Principal, Status> {
        let Some(header) = header else {
            if node_certificate {
                return Ok(Principal::Node);
            }
            return Err(Status::unauthenticated(
                "no credentials: give a token (--token, CAIRN_TOKEN or the profile's token) or a user and password",
            ));
        };
        let presented = secrets::parse_header(header).map_err(Status::unauthenticated)?;
        let index = self.index()?;
        if !index.state.is_initialized() {
            // The bootstrap with the admin secret is proposed as soon as a leader is elected:
            // a client that came first retries.
            return Err(Status::unavailable(
                "the cluster's users are not set up yet (the admin secret's bootstrap is not applied); retry shortly",
            ));
        }
        match presented {
            Presented::Token(token) => {
                let hash = secrets::token_hash(&token);
                let found = index
                    .by_hash
                    .get(&hash)
                    .and_then(|id| index.state.tokens.get(id).map(|t| (id, t)));
                let Some((id, token)) = found else {
                    return Err(Status::unauthenticated("unknown or revoked token"));
                };
                if token.expires_unix_ms.is_some_and(|at| now_unix_ms >= at) {
                    return Err(Status::unauthenticated(format!("token {id} has expired")));
                }
                if !index.state.users.contains_key(&token.user) {
                    return Err(Status::unauthenticated("unknown or revoked token"));
                }
                Ok(Principal::User(token.user.clone()))
            }
            Presented::Password { user, password } => {
                let refused = || Status::unauthenticated("wrong user name or password");
                let Some(phc) = index
                    .state
                    .users
                    .get(&user)
                    .and_then(|u| u.password_hash.clone())
                else {
                    return Err(refused());
                };
                let key = (user.clone(), secrets::token_hash(&password));
                let remembered = {
                    let cache = self.passwords.lock().unwrap_or_else(|p| p.into_inner());
                    cache.get(&key) == Some(&phc)
                };
                if !remembered {
                    let _slot = self
                        .password_checks
                        .acquire()
                        .await
                        .map_err(|_| Status::unavailable("shutting down"))?;
                    let checked = phc.clone();
                    let matches = tokio::task::spawn_blocking(move || {
                        secrets::verify_password(&password, &checked)
                    })
                    .await
                    .unwrap_or(false);
                    if !matches {
                        return Err(refused());
                    }
                    let mut cache = self.passwords.lock().unwrap_or_else(|p| p.into_inner());
                    if cache.len() >= MAX_CACHED_PASSWORDS {
                        cache.clear();
                    }
                    cache.insert(key, phc);
                }
                Ok(Principal::User(user))
            }
        }
    }

    /// Whether `principal` may do `action` on `name`; a refusal is logged and PERMISSION_DENIED.
    pub fn allow(&self, principal: &Principal, action: Action, name: &str) -> Result<(), Status> {
        let user = match principal {
            Principal::Node => return Ok(()),
            Principal::User(user) => user,
        };
        if self.state()?.allows(user, action, name) {
            return Ok(());
        }
        tracing::warn!(target: "cairn::audit", user = %user, action = %action, name = %name, "denied");
        Err(Status::permission_denied(format!(
            "user {user:?} may not {action} {name:?}: no grant covers it"
        )))
    }
}

/// The per-call check: `action` on every name of `names`, for the caller the layer put in
/// the request's extensions. A node without auth in force (`--insecure`, the simulation)
/// has no layer and no caller there: allowed.
pub fn check<'a>(
    auth: Option<&Auth>,
    extensions: &tonic::Extensions,
    action: Action,
    names: impl IntoIterator<Item = &'a str>,
) -> Result<(), Status> {
    let Some(auth) = auth else {
        return Ok(());
    };
    let Some(principal) = extensions.get::<Principal>() else {
        return Err(Status::unauthenticated("no credentials were checked"));
    };
    for name in names {
        auth.allow(principal, action, name)?;
    }
    Ok(())
}
