//! The simulated admin: changes users, tokens, roles and grants (`Command::Auth`) while the
//! faults run, so that the checker can judge every node's security state (`checker/auth.rs`).
//!
//! It proposes each change on whichever node leads, through that node's Raft handle: the
//! step the node's `Auth` service takes once it has hashed the secrets (`api/auth.rs`). The
//! gRPC gate itself is not in the simulation: it tells a forwarding node from a client by its
//! TLS certificate, and turmoil's network has no TLS. So what is judged here is the state
//! machine's rule and its replication (every replica applies the committed changes, in
//! order, to the same state), not who may call.
//!
//! A change carries one id from its first try to its last; a retry of one that landed is
//! answered `AlreadyDone` by the state machine and writes nothing again.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cairn_node::auth::secrets::token_hash;
use cairn_node::auth::Auth;
use cairn_raft_store::auth::{Action, AuthChange, AuthCommand, AuthResult, Grant};
use cairn_raft_store::{Command, Raft, Response};
use uuid::Uuid;

use crate::history::{AuthChangeRef, AuthOutcome, Record};
use crate::rng::SimRng;
use crate::workload::{now_ms, record, Recorder};

/// Longest one proposal may take before the admin calls its outcome unknown.
pub const AUTH_OP_TIMEOUT_MS: u64 = 2_000;
/// Proposals of one change (the same id each time) before the admin gives up on it.
pub const AUTH_ATTEMPTS: u32 = 3;
/// Pause between attempts (no leader known, an election under way).
pub const AUTH_RETRY_PAUSE_MS: u64 = 100;
/// The admin's users besides the bootstrap admin.
pub const AUTH_USERS: [&str; 2] = ["u1", "u2"];
/// The prefixes grants are given on.
pub const AUTH_PREFIXES: [&str; 4] = ["hot-", "cold-1-", "$all", "$ce-hot"];
/// The admin's roles: the first is added at the start, the second now and then added and
/// removed (taking it from its members).
pub const AUTH_ROLES: [&str; 2] = ["r1", "r2"];

/// Finds the node that leads now, if any (the simulation's registry of running nodes).
pub type LeaderFinder = Arc<dyn Fn() -> Option<Raft> + Send + Sync>;
/// Each running node: its id, the last log index it applied, and its gate's authentication.
pub type Judges = Arc<dyn Fn() -> Vec<(u64, u64, Arc<Auth>)> + Send + Sync>;

/// What the admin reaches of the simulated cluster.
#[derive(Clone)]
pub struct Reach {
    pub leader: LeaderFinder,
    pub judges: Judges,
}

/// The text of the token the admin makes as `token_id` (only its hash is proposed).
pub fn token_text(token_id: &str) -> String {
    format!("sim-token-{token_id}")
}

/// What the admin believes holds (from acknowledged answers), to choose plausible changes.
#[derive(Default)]
struct Believed {
    next_token: u64,
    tokens: Vec<String>,
    grants: Vec<(String, Action, String)>,
    role_grants: Vec<(String, Action, String)>,
    /// (user, role) pairs assigned.
    assigned: Vec<(String, String)>,
}

/// Runs the admin until `until_ms`: the bootstrap, the users, then random changes.
pub async fn run_auth_admin(
    reach: Reach,
    mut rng: SimRng,
    until_ms: u64,
    recorder: Recorder,
) -> turmoil::Result {
    let mut op = 0u64;
    let mut believed = Believed::default();
    let mut setup = vec![AuthChangeRef::Bootstrap];
    setup.extend(AUTH_USERS.iter().map(|user| AuthChangeRef::AddUser {
        user: (*user).to_owned(),
    }));
    setup.push(AuthChangeRef::AddRole {
        role: AUTH_ROLES[0].to_owned(),
    });
    for change in setup {
        // Each until it lands (or is refused): nothing else makes sense before.
        while now_ms() < until_ms {
            op += 1;
            let (outcome, _) = change_once(&reach, &mut rng, op, change.clone(), &recorder).await;
            if !matches!(outcome, AuthOutcome::Unknown { .. }) {
                break;
            }
        }
    }
    while now_ms() < until_ms {
        let change = choose(&mut rng, &mut believed);
        op += 1;
        let (outcome, index) = change_once(&reach, &mut rng, op, change.clone(), &recorder).await;
        if let (AuthOutcome::Ok { .. }, Some(index)) = (&outcome, index) {
            if let AuthChangeRef::CreateToken { token_id, .. }
            | AuthChangeRef::RevokeToken { token_id } = &change
            {
                probe(&reach, op, token_id, index, &recorder).await;
            }
        }
        if let AuthOutcome::Ok { .. } = outcome {
            match change {
                AuthChangeRef::CreateToken { token_id, .. } => believed.tokens.push(token_id),
                AuthChangeRef::RevokeToken { token_id } => {
                    believed.tokens.retain(|t| *t != token_id)
                }
                AuthChangeRef::Grant {
                    user,
                    action,
                    prefix,
                } => {
                    if let Some(action) = Action::parse(&action) {
                        believed.grants.push((user, action, prefix));
                    }
                }
                AuthChangeRef::Revoke {
                    user,
                    action,
                    prefix,
                } => believed.grants.retain(|g| {
                    (g.0.as_str(), g.1.as_str(), g.2.as_str()) != (&user, &action, &prefix)
                }),
                AuthChangeRef::GrantRole {
                    role,
                    action,
                    prefix,
                } => {
                    if let Some(action) = Action::parse(&action) {
                        believed.role_grants.push((role, action, prefix));
                    }
                }
                AuthChangeRef::RevokeRole {
                    role,
                    action,
                    prefix,
                } => believed.role_grants.retain(|g| {
                    (g.0.as_str(), g.1.as_str(), g.2.as_str()) != (&role, &action, &prefix)
                }),
                AuthChangeRef::AssignRole { user, role } => believed.assigned.push((user, role)),
                AuthChangeRef::UnassignRole { user, role } => believed
                    .assigned
                    .retain(|a| *a != (user.clone(), role.clone())),
                AuthChangeRef::RemoveRole { role } => {
                    believed.assigned.retain(|a| a.1 != role);
                    believed.role_grants.retain(|g| g.0 != role);
                }
                AuthChangeRef::Bootstrap
                | AuthChangeRef::AddUser { .. }
                | AuthChangeRef::AddRole { .. } => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.between(50, 250))).await;
    }
    Ok(())
}

/// The next change: mostly ones that should apply, some that the state machine must refuse
/// (a token never made, a grant not held, a token for a user that does not exist, a role
/// added twice or assigned once removed). About one in three is a role change.
fn choose(rng: &mut SimRng, believed: &mut Believed) -> AuthChangeRef {
    if rng.percent(30) {
        return choose_role_change(rng, believed);
    }
    let user =
        |rng: &mut SimRng| AUTH_USERS[rng.below(AUTH_USERS.len() as u64) as usize].to_owned();
    match rng.below(10) {
        0..=2 => {
            believed.next_token += 1;
            let user = if rng.percent(10) {
                "nobody".to_owned()
            } else {
                user(rng)
            };
            AuthChangeRef::CreateToken {
                token_id: format!("t{}", believed.next_token),
                user,
            }
        }
        3..=4 => {
            let token_id = if believed.tokens.is_empty() || rng.percent(10) {
                "t0".to_owned()
            } else {
                believed.tokens[rng.below(believed.tokens.len() as u64) as usize].clone()
            };
            AuthChangeRef::RevokeToken { token_id }
        }
        5..=7 => {
            let action = [Action::Read, Action::Write, Action::Delete, Action::Groups]
                [rng.below(4) as usize];
            AuthChangeRef::Grant {
                user: user(rng),
                action: action.as_str().to_owned(),
                prefix: AUTH_PREFIXES[rng.below(AUTH_PREFIXES.len() as u64) as usize].to_owned(),
            }
        }
        _ => {
            let (user, action, prefix) = if believed.grants.is_empty() || rng.percent(10) {
                (user(rng), Action::Read, "never-granted-".to_owned())
            } else {
                believed.grants[rng.below(believed.grants.len() as u64) as usize].clone()
            };
            AuthChangeRef::Revoke {
                user,
                action: action.as_str().to_owned(),
                prefix,
            }
        }
    }
}

fn choose_role_change(rng: &mut SimRng, believed: &mut Believed) -> AuthChangeRef {
    let user =
        |rng: &mut SimRng| AUTH_USERS[rng.below(AUTH_USERS.len() as u64) as usize].to_owned();
    let role =
        |rng: &mut SimRng| AUTH_ROLES[rng.below(AUTH_ROLES.len() as u64) as usize].to_owned();
    match rng.below(10) {
        0..=1 => {
            let action = [Action::Read, Action::Write, Action::Delete, Action::Groups]
                [rng.below(4) as usize];
            AuthChangeRef::GrantRole {
                role: role(rng),
                action: action.as_str().to_owned(),
                prefix: AUTH_PREFIXES[rng.below(AUTH_PREFIXES.len() as u64) as usize].to_owned(),
            }
        }
        2 => {
            let (role, action, prefix) = if believed.role_grants.is_empty() || rng.percent(10) {
                (role(rng), Action::Read, "never-granted-".to_owned())
            } else {
                believed.role_grants[rng.below(believed.role_grants.len() as u64) as usize].clone()
            };
            AuthChangeRef::RevokeRole {
                role,
                action: action.as_str().to_owned(),
                prefix,
            }
        }
        3..=5 => AuthChangeRef::AssignRole {
            user: user(rng),
            role: role(rng),
        },
        6 => {
            let (user, role) = if believed.assigned.is_empty() || rng.percent(10) {
                (user(rng), role(rng))
            } else {
                believed.assigned[rng.below(believed.assigned.len() as u64) as usize].clone()
            };
            AuthChangeRef::UnassignRole { user, role }
        }
        7..=8 => AuthChangeRef::AddRole {
            role: AUTH_ROLES[1].to_owned(),
        },
        _ => AuthChangeRef::RemoveRole {
            role: AUTH_ROLES[1].to_owned(),
        },
    }
}

/// The state machine's change for a recorded one (the secrets: fixed hashes; the simulation
/// never authenticates with them).
fn to_change(change: &AuthChangeRef) -> AuthChange {
    let grant = |action: &str, prefix: &str| Grant {
        // The admin only records actions it took from `Action`.
        action: Action::parse(action).unwrap_or(Action::Read),
        prefix: prefix.to_owned(),
    };
    match change {
        AuthChangeRef::Bootstrap => AuthChange::Bootstrap {
            token_hash: token_hash("sim-admin-secret"),
        },
        AuthChangeRef::AddUser { user } => AuthChange::AddUser {
            user: user.clone(),
            password_hash: None,
        },
        AuthChangeRef::CreateToken { token_id, user } => AuthChange::CreateToken {
            token_id: token_id.clone(),
            user: user.clone(),
            token_hash: token_hash(&token_text(token_id)),
            expires_unix_ms: None,
        },
        AuthChangeRef::RevokeToken { token_id } => AuthChange::RevokeToken {
            token_id: token_id.clone(),
        },
        AuthChangeRef::Grant {
            user,
            action,
            prefix,
        } => AuthChange::Grant {
            user: user.clone(),
            grant: grant(action, prefix),
        },
        AuthChangeRef::Revoke {
            user,
            action,
            prefix,
        } => AuthChange::Revoke {
            user: user.clone(),
            grant: grant(action, prefix),
        },
        AuthChangeRef::AddRole { role } => AuthChange::AddRole { role: role.clone() },
        AuthChangeRef::RemoveRole { role } => AuthChange::RemoveRole { role: role.clone() },
        AuthChangeRef::GrantRole {
            role,
            action,
            prefix,
        } => AuthChange::GrantRole {
            role: role.clone(),
            grant: grant(action, prefix),
        },
        AuthChangeRef::RevokeRole {
            role,
            action,
            prefix,
        } => AuthChange::RevokeRole {
            role: role.clone(),
            grant: grant(action, prefix),
        },
        AuthChangeRef::AssignRole { user, role } => AuthChange::AssignRole {
            user: user.clone(),
            role: role.clone(),
        },
        AuthChangeRef::UnassignRole { user, role } => AuthChange::UnassignRole {
            user: user.clone(),
            role: role.clone(),
        },
    }
}

/// Every node that has applied the log up to `index` judges the token `token_id` with its
/// gate's authentication, right away (the checker knows what each must answer).
async fn probe(reach: &Reach, op: u64, token_id: &str, index: u64, recorder: &Recorder) {
    let header = format!("Bearer {}", token_text(token_id));
    let now_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    for (node, applied, auth) in (reach.judges)() {
        if applied < index {
            continue;
        }
        let accepted = auth
            .authenticate(Some(header.as_bytes()), false, now_unix_ms)
            .await
            .is_ok();
        record(
            recorder,
            Record::AuthProbe {
                op,
                at_ms: now_ms(),
                node,
                token_id: token_id.to_owned(),
                accepted,
            },
        );
    }
}

/// Proposes `change` (up to `AUTH_ATTEMPTS` times, one id) and records how it ended; the
/// log index of the entry that answered, when one did.
async fn change_once(
    reach: &Reach,
    rng: &mut SimRng,
    op: u64,
    change: AuthChangeRef,
    recorder: &Recorder,
) -> (AuthOutcome, Option<u64>) {
    let start_ms = now_ms();
    let id = rng.uuid();
    let mut outcome = AuthOutcome::Unknown {
        error: "no leader".into(),
    };
    let mut index = None;
    for _ in 0..AUTH_ATTEMPTS {
        (outcome, index) = propose(&reach.leader, id, &change).await;
        if !matches!(outcome, AuthOutcome::Unknown { .. }) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(AUTH_RETRY_PAUSE_MS)).await;
    }
    record(
        recorder,
        Record::AuthChange {
            op,
            start_ms,
            end_ms: now_ms(),
            id,
            change,
            outcome: outcome.clone(),
        },
    );
    (outcome, index)
}

async fn propose(
    leader: &LeaderFinder,
    id: Uuid,
    change: &AuthChangeRef,
) -> (AuthOutcome, Option<u64>) {
    let Some(raft) = leader() else {
        let error = "no leader".into();
        return (AuthOutcome::Unknown { error }, None);
    };
    let command = Command::Auth(AuthCommand {
        change: to_change(change),
        id,
        // As the node stamps it (the wall clock; the history leaves it out).
        created_unix_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
    });
    let write = raft.client_write(command);
    let written = match tokio::time::timeout(Duration::from_millis(AUTH_OP_TIMEOUT_MS), write).await
    {
        Ok(Ok(written)) => written,
        Ok(Err(e)) => {
            let error = e.to_string();
            return (AuthOutcome::Unknown { error }, None);
        }
        Err(_) => {
            let error = format!("no answer within {AUTH_OP_TIMEOUT_MS} ms");
            return (AuthOutcome::Unknown { error }, None);
        }
    };
    let outcome = match written.data {
        Response::Auth(AuthResult::Done { position } | AuthResult::AlreadyDone { position }) => {
            AuthOutcome::Ok { position }
        }
        Response::Auth(AuthResult::Refused(refusal)) => AuthOutcome::Refused {
            reason: refusal.to_string(),
        },
        other => AuthOutcome::Unknown {
            error: format!("unexpected answer {other:?}"),
        },
    };
    (outcome, Some(written.log_id.index))
}
