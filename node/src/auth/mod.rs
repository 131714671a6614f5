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
//! Denials and admin actions are logged as one structured line each, target `cairn::audit`;
//! failures (unauthenticated calls, denials) at most `audit::AUDIT_FAILURE_LINES_PER_WINDOW`
//! a second, the rest counted (`audit`).

pub mod audit;
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
    /// The limit of failure lines in the log (`audit`).
    failure_lines: audit::FailureLines,
}

impl Auth {
    pub fn new(view: AuthView) -> Arc<Auth> {
        Arc::new(Auth {
            view,
            tokens: RwLock::new(None),
            passwords: Mutex::new(HashMap::new()),
            password_checks: tokio::sync::Semaphore::new(MAX_CONCURRENT_PASSWORD_CHECKS),
            failure_lines: audit::FailureLines::default(),
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

    /// Whether a failure's audit line is to be logged now (`audit`: the rate limit).
    pub fn should_log_failure(&self) -> bool {
        self.failure_lines.should_log()
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
        if self.failure_lines.should_log() {
            tracing::warn!(target: "cairn::audit", user = %user, action = %action, name = %name, "denied");
        }
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

/// Whether the caller may do `action` on `name`, without logging a refusal: for what a
/// caller is shown (a list filtered to what it may see), not for refusing a call.
pub fn permits(
    auth: Option<&Auth>,
    extensions: &tonic::Extensions,
    action: Action,
    name: &str,
) -> bool {
    let Some(auth) = auth else {
        return true;
    };
    match extensions.get::<Principal>() {
        Some(Principal::Node) => true,
        Some(Principal::User(user)) => auth
            .state()
            .is_ok_and(|state| state.allows(user, action, name)),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use cairn_raft_store::auth::{AuthChange, AuthCommand, Grant};
    use cairn_raft_store::disk::MemDisk;
    use cairn_raft_store::{log_id, open_store, Command, Entry, EntryPayload, Limits};

    use super::*;

    const NOW: u64 = 1_700_000_000_000;

    /// A store with the admin bootstrapped from `admin`, and `changes` applied after.
    async fn store_with(
        admin: &str,
        changes: Vec<AuthChange>,
    ) -> (cairn_raft_store::Store, Arc<Auth>) {
        let mut store = open_store(MemDisk::new(), Limits::default()).expect("store");
        let auth = Auth::new(store.state_machine.auth_view());
        let all = std::iter::once(AuthChange::Bootstrap {
            token_hash: secrets::token_hash(admin),
        })
        .chain(changes);
        let entries: Vec<Entry> = all
            .enumerate()
            .map(|(i, change)| Entry {
                log_id: log_id(1, 1, i as u64 + 1),
                payload: EntryPayload::Normal(Command::Auth(AuthCommand {
                    change,
                    id: uuid::Uuid::now_v7(),
                    created_unix_ms: NOW,
                })),
            })
            .collect();
        store
            .state_machine
            .apply_entries(entries)
            .await
            .expect("apply");
        (store, auth)
    }

    fn bearer(token: &str) -> Vec<u8> {
        format!("Bearer {token}").into_bytes()
    }

    #[tokio::test]
    async fn tokens_authenticate_until_they_expire_and_passwords_only_when_right() {
        let admin = "an-admin-secret-of-enough-bytes";
        let phc = secrets::hash_password("correct horse").expect("hash");
        let (_store, auth) = store_with(
            admin,
            vec![
                AuthChange::AddUser {
                    user: "app".into(),
                    password_hash: Some(phc),
                },
                AuthChange::CreateToken {
                    token_id: "t1".into(),
                    user: "app".into(),
                    token_hash: secrets::token_hash("cairn_short_lived"),
                    expires_unix_ms: Some(NOW + 1_000),
                },
                AuthChange::Grant {
                    user: "app".into(),
                    grant: Grant {
                        action: Action::Write,
                        prefix: "orders-".into(),
                    },
                },
            ],
        )
        .await;
        let who = auth
            .authenticate(Some(&bearer(admin)), false, NOW)
            .await
            .expect("the admin secret is the admin's token");
        assert_eq!(who, Principal::User("admin".into()));
        let app = auth
            .authenticate(Some(&bearer("cairn_short_lived")), false, NOW)
            .await
            .expect("before expiry");
        assert!(auth.allow(&app, Action::Write, "orders-1").is_ok());
        assert_eq!(
            auth.allow(&app, Action::Write, "invoices-1")
                .expect_err("no grant")
                .code(),
            tonic::Code::PermissionDenied
        );
        let expired = auth
            .authenticate(Some(&bearer("cairn_short_lived")), false, NOW + 1_000)
            .await
            .expect_err("expired");
        assert!(expired.message().contains("expired"), "{expired:?}");
        let basic = |password: &str| {
            use base64::Engine;
            let text = base64::engine::general_purpose::STANDARD.encode(format!("app:{password}"));
            format!("Basic {text}").into_bytes()
        };
        for _ in 0..2 {
            // The second time from the cache of verified passwords.
            let user = auth
                .authenticate(Some(&basic("correct horse")), false, NOW)
                .await
                .expect("password");
            assert_eq!(user, Principal::User("app".into()));
        }
        let wrong = auth
            .authenticate(Some(&basic("wrong horse")), false, NOW)
            .await
            .expect_err("wrong password");
        assert_eq!(wrong.code(), tonic::Code::Unauthenticated);
        let nobody = auth.authenticate(None, false, NOW).await.expect_err("none");
        assert_eq!(nobody.code(), tonic::Code::Unauthenticated);
        // A node's certificate without a header is a node.
        assert_eq!(
            auth.authenticate(None, true, NOW).await.expect("node"),
            Principal::Node
        );
    }

    #[tokio::test]
    async fn before_the_bootstrap_is_applied_callers_are_asked_to_retry() {
        let store = open_store(MemDisk::new(), Limits::default()).expect("store");
        let auth = Auth::new(store.state_machine.auth_view());
        let early = auth
            .authenticate(Some(&bearer("anything")), false, NOW)
            .await
            .expect_err("not set up");
        assert_eq!(early.code(), tonic::Code::Unavailable);
    }
}
