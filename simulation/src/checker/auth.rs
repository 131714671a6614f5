//! The rule of users, tokens and grants (`auth-state`): every node's security state is the
//! committed sequence of changes applied in order, and nothing else.
//!
//! Each node dumps every event of its `$auth` stream (`NodeAuth`): the state after each change,
//! with the id of the change that wrote it. The checker replays each node's sequence with its
//! own few lines of the rules of change (below; not the store's code, so the store is not
//! judged by itself) from the changes the admin made (`AuthChange`), and requires:
//! - each stored state is exactly the one before with its change made (a grant on the prefix
//!   given, a revoked token gone, a removed one never back), and no change the state before
//!   must refuse was stored;
//! - every node holds the same sequence (then a token revoked is refused by every node once
//!   applied there, and no node allows what a grant was not given for);
//! - an acknowledged change is in it at its position; a refused one is not in it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use uuid::Uuid;

use super::rule::{Rule, Sink};
use crate::history::{AuthChangeRef, AuthOutcome, AuthStateRef, Record};

/// The bootstrap admin, its grant and its token, as the store names them.
const ADMIN: &str = "admin";
const ADMIN_GRANT: &str = "admin:*";
const BOOTSTRAP_TOKEN: &str = "bootstrap";

/// The checker's model of a security state: tokens (id to user), grants per user, grants
/// per role, roles per user (users with none left out).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Model {
    tokens: BTreeMap<String, String>,
    grants: BTreeMap<String, BTreeSet<String>>,
    roles: BTreeMap<String, BTreeSet<String>>,
    user_roles: BTreeMap<String, BTreeSet<String>>,
}

impl Model {
    fn of(state: &AuthStateRef) -> Model {
        Model {
            tokens: state.tokens.clone(),
            grants: state.grants.clone(),
            roles: state.roles.clone(),
            user_roles: state.user_roles.clone(),
        }
    }

    /// Users holding admin, by their own grant or a role's.
    fn admins(&self) -> usize {
        self.grants
            .iter()
            .filter(|(user, grants)| {
                grants.contains(ADMIN_GRANT)
                    || self.user_roles.get(*user).is_some_and(|roles| {
                        roles
                            .iter()
                            .any(|r| self.roles.get(r).is_some_and(|g| g.contains(ADMIN_GRANT)))
                    })
            })
            .count()
    }

    /// The state with `change` made, or `None` if it must be refused.
    fn changed(&self, change: &AuthChangeRef) -> Option<Model> {
        let mut next = self.clone();
        let initialized = !self.grants.is_empty();
        match change {
            AuthChangeRef::Bootstrap => {
                if initialized {
                    return None;
                }
                next.grants
                    .insert(ADMIN.into(), BTreeSet::from([ADMIN_GRANT.to_owned()]));
                next.tokens.insert(BOOTSTRAP_TOKEN.into(), ADMIN.into());
            }
            _ if !initialized => return None,
            AuthChangeRef::AddUser { user } => {
                if next.grants.insert(user.clone(), BTreeSet::new()).is_some() {
                    return None;
                }
            }
            AuthChangeRef::CreateToken { token_id, user } => {
                if !self.grants.contains_key(user)
                    || next.tokens.insert(token_id.clone(), user.clone()).is_some()
                {
                    return None;
                }
            }
            AuthChangeRef::RevokeToken { token_id } => {
                next.tokens.remove(token_id)?;
            }
            AuthChangeRef::Grant {
                user,
                action,
                prefix,
            } => {
                next.grants
                    .get_mut(user)?
                    .insert(format!("{action}:{prefix}"));
            }
            AuthChangeRef::Revoke {
                user,
                action,
                prefix,
            } => {
                let grant = format!("{action}:{prefix}");
                if !next.grants.get_mut(user)?.remove(&grant) {
                    return None;
                }
            }
            AuthChangeRef::AddRole { role } => {
                if next.roles.insert(role.clone(), BTreeSet::new()).is_some() {
                    return None;
                }
            }
            AuthChangeRef::RemoveRole { role } => {
                next.roles.remove(role)?;
                for roles in next.user_roles.values_mut() {
                    roles.remove(role);
                }
                next.user_roles.retain(|_, roles| !roles.is_empty());
            }
            AuthChangeRef::GrantRole {
                role,
                action,
                prefix,
            } => {
                next.roles
                    .get_mut(role)?
                    .insert(format!("{action}:{prefix}"));
            }
            AuthChangeRef::RevokeRole {
                role,
                action,
                prefix,
            } => {
                if !next
                    .roles
                    .get_mut(role)?
                    .remove(&format!("{action}:{prefix}"))
                {
                    return None;
                }
            }
            AuthChangeRef::AssignRole { user, role } => {
                if !self.roles.contains_key(role) || !self.grants.contains_key(user) {
                    return None;
                }
                next.user_roles
                    .entry(user.clone())
                    .or_default()
                    .insert(role.clone());
            }
            AuthChangeRef::UnassignRole { user, role } => {
                if !self.grants.contains_key(user) || !next.user_roles.get_mut(user)?.remove(role) {
                    return None;
                }
                next.user_roles.retain(|_, roles| !roles.is_empty());
            }
        }
        // No change may leave the cluster without an admin, whichever way it would.
        if self.admins() > 0 && next.admins() == 0 {
            return None;
        }
        Some(next)
    }
}

/// The `auth-state` rule (see the module docs).
pub(super) fn check_auth(history: &[Record], sink: &mut Sink) {
    let mut changes: HashMap<Uuid, (u64, &AuthChangeRef)> = HashMap::new();
    let mut outcomes: Vec<(u64, Uuid, &AuthOutcome)> = Vec::new();
    for record in history {
        if let Record::AuthChange {
            op,
            id,
            change,
            outcome,
            ..
        } = record
        {
            changes.entry(*id).or_insert((*op, change));
            outcomes.push((*op, *id, outcome));
        }
    }
    let nodes: Vec<(u64, &[AuthStateRef])> = history
        .iter()
        .filter_map(|record| match record {
            Record::NodeAuth { node, states } => Some((*node, states.as_slice())),
            _ => None,
        })
        .collect();
    for &(node, states) in &nodes {
        replay(node, states, &changes, sink);
    }
    // The longest sequence (the first on ties) is the reference, as for `$all`.
    let reference = nodes.iter().copied().reduce(|best, next| {
        if next.1.len() > best.1.len() {
            next
        } else {
            best
        }
    });
    let (reference_node, reference) = reference.unwrap_or((0, &[]));
    for &(node, states) in &nodes {
        let ids = states.iter().map(|s| (s.id, s.position));
        let reference_ids = reference.iter().map(|s| (s.id, s.position));
        if !ids.eq(reference_ids) {
            sink.push(Rule::AuthState, || {
                format!(
                    "node {node} holds {} security states, node {reference_node} {}, and they differ",
                    states.len(),
                    reference.len()
                )
            });
        }
    }
    let stored: HashMap<Uuid, u64> = reference.iter().map(|s| (s.id, s.position)).collect();
    for (op, id, outcome) in outcomes {
        match outcome {
            AuthOutcome::Ok { position } if stored.get(&id) != Some(position) => {
                sink.push(Rule::AuthState, || {
                    format!(
                        "auth change op {op} was acknowledged at position {position}, but node \
                         {reference_node} holds it at {:?}",
                        stored.get(&id)
                    )
                })
            }
            AuthOutcome::Refused { reason } if stored.contains_key(&id) => sink
                .push(Rule::AuthState, || {
                    format!("auth change op {op} was refused ({reason}) but is stored")
                }),
            _ => {}
        }
    }
}

/// The `auth-verdict` rule: right after an acknowledged token change, every node that had
/// applied it judges the token by it (a created token let in, a revoked one refused): the
/// gate's cache of the state is the state applied, on every node.
pub(super) fn check_probes(history: &[Record], sink: &mut Sink) {
    let changes: HashMap<u64, &AuthChangeRef> = history
        .iter()
        .filter_map(|record| match record {
            Record::AuthChange { op, change, .. } => Some((*op, change)),
            _ => None,
        })
        .collect();
    for record in history {
        let Record::AuthProbe {
            op,
            at_ms,
            node,
            token_id,
            accepted,
        } = record
        else {
            continue;
        };
        let expected = match changes.get(op) {
            Some(AuthChangeRef::CreateToken { .. }) => true,
            Some(AuthChangeRef::RevokeToken { .. }) => false,
            _ => continue,
        };
        if *accepted != expected {
            sink.push(Rule::AuthVerdict, || {
                let verdict = if *accepted { "let in" } else { "refused" };
                format!(
                    "at {at_ms}ms node {node}, which had applied auth change op {op}, {verdict} token {token_id}"
                )
            });
        }
    }
}

/// One node's sequence against the model, from the empty state. After a wrong state the
/// replay goes on from the node's own, so one wrong change gives one violation.
fn replay(
    node: u64,
    states: &[AuthStateRef],
    changes: &HashMap<Uuid, (u64, &AuthChangeRef)>,
    sink: &mut Sink,
) {
    let mut model = Model::default();
    for state in states {
        let stored = Model::of(state);
        let position = state.position;
        match changes.get(&state.id) {
            None => sink.push(Rule::AuthState, || {
                format!(
                    "node {node}: the security state at position {position} was written by {}, \
                     a change no one made",
                    state.id
                )
            }),
            Some(&(op, change)) => match model.changed(change) {
                None => sink.push(Rule::AuthState, || {
                    format!(
                        "node {node}: auth change op {op} ({change:?}) is stored at position \
                         {position}, but the state before it must refuse it"
                    )
                }),
                Some(expected) if expected != stored => sink.push(Rule::AuthState, || {
                    format!(
                        "node {node}: after auth change op {op} ({change:?}) at position \
                         {position} it holds {stored:?}, the committed changes make {expected:?}"
                    )
                }),
                Some(_) => {}
            },
        }
        model = stored;
    }
}

/// Each node's `$auth` positions: `$all` reads never show them, so the node's `NodeLog` has a
/// gap exactly there.
pub(super) fn hidden_positions(history: &[Record]) -> BTreeSet<u64> {
    history
        .iter()
        .filter_map(|record| match record {
            Record::NodeAuth { states, .. } => Some(states.iter().map(|s| s.position)),
            _ => None,
        })
        .flatten()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::check;
    use crate::history::{AppendOutcome, EventRef, Expected};

    fn change(op: u64, change: AuthChangeRef, outcome: AuthOutcome) -> Record {
        Record::AuthChange {
            op,
            start_ms: op * 10,
            end_ms: op * 10 + 5,
            id: Uuid::from_u128(u128::from(op)),
            change,
            outcome,
        }
    }

    fn state(
        op: u64,
        position: u64,
        tokens: &[(&str, &str)],
        grants: &[(&str, &[&str])],
    ) -> AuthStateRef {
        AuthStateRef {
            position,
            id: Uuid::from_u128(u128::from(op)),
            tokens: tokens
                .iter()
                .map(|(t, u)| ((*t).to_owned(), (*u).to_owned()))
                .collect(),
            grants: grants
                .iter()
                .map(|(u, g)| ((*u).to_owned(), g.iter().map(|g| (*g).to_owned()).collect()))
                .collect(),
            roles: BTreeMap::new(),
            user_roles: BTreeMap::new(),
        }
    }

    /// Bootstrap at 0, a user at 1, a token at 2, a grant at 3, the token revoked at 5 (one
    /// client event at 4, another at 6), and a revoke of a grant never given, refused.
    fn history(states: Vec<AuthStateRef>) -> Vec<Record> {
        let event = |n: u128, revision: u64, position: u64| EventRef {
            event_type: None,
            tags: Vec::new(),
            id: Uuid::from_u128(1_000 + n),
            stream: "s".into(),
            revision,
            position,
            digest: None,
        };
        let mut history = vec![
            Record::Run {
                seed: 1,
                nodes: 2,
                clients: 1,
            },
            change(1, AuthChangeRef::Bootstrap, AuthOutcome::Ok { position: 0 }),
            change(
                2,
                AuthChangeRef::AddUser { user: "u1".into() },
                AuthOutcome::Ok { position: 1 },
            ),
            change(
                3,
                AuthChangeRef::CreateToken {
                    token_id: "t1".into(),
                    user: "u1".into(),
                },
                AuthOutcome::Ok { position: 2 },
            ),
            change(
                4,
                AuthChangeRef::Grant {
                    user: "u1".into(),
                    action: "read".into(),
                    prefix: "hot-".into(),
                },
                AuthOutcome::Unknown {
                    error: "no answer".into(),
                },
            ),
            Record::Append {
                op: 1,
                client: 1,
                start_ms: 40,
                end_ms: 45,
                stream: "s".into(),
                expected: Expected::Any,
                ids: vec![Uuid::from_u128(1_001)],
                digests: Vec::new(),
                outcome: AppendOutcome::Ok {
                    last_revision: 0,
                    last_position: 4,
                },
            },
            change(
                5,
                AuthChangeRef::RevokeToken {
                    token_id: "t1".into(),
                },
                AuthOutcome::Ok { position: 5 },
            ),
            change(
                6,
                AuthChangeRef::Revoke {
                    user: "u1".into(),
                    action: "write".into(),
                    prefix: "hot-".into(),
                },
                AuthOutcome::Refused {
                    reason: "no such grant".into(),
                },
            ),
        ];
        for node in 1..=2 {
            history.push(Record::NodeLog {
                node,
                events: vec![event(1, 0, 4), event(2, 1, 6)],
            });
            history.push(Record::NodeAuth {
                node,
                states: states.clone(),
            });
        }
        history
    }

    fn good_states() -> Vec<AuthStateRef> {
        let admin: (&str, &[&str]) = ("admin", &["admin:*"]);
        vec![
            state(1, 0, &[("bootstrap", "admin")], &[admin]),
            state(2, 1, &[("bootstrap", "admin")], &[admin, ("u1", &[])]),
            state(
                3,
                2,
                &[("bootstrap", "admin"), ("t1", "u1")],
                &[admin, ("u1", &[])],
            ),
            state(
                4,
                3,
                &[("bootstrap", "admin"), ("t1", "u1")],
                &[admin, ("u1", &["read:hot-"])],
            ),
            state(
                5,
                5,
                &[("bootstrap", "admin")],
                &[admin, ("u1", &["read:hot-"])],
            ),
        ]
    }

    fn rules(history: &[Record]) -> BTreeSet<Rule> {
        check(history).violations.iter().map(|v| v.rule).collect()
    }

    #[test]
    fn the_committed_changes_in_order_pass_and_their_positions_are_no_gap() {
        let report = check(&history(good_states()));
        assert!(report.is_ok(), "{report}");
    }

    #[test]
    fn a_revoked_token_still_held_is_found() {
        let mut states = good_states();
        states[4].tokens.insert("t1".into(), "u1".into());
        assert_eq!(rules(&history(states)), BTreeSet::from([Rule::AuthState]));
    }

    #[test]
    fn a_grant_on_another_prefix_is_found() {
        let mut states = good_states();
        for state in &mut states[3..] {
            state
                .grants
                .insert("u1".into(), BTreeSet::from(["read:hot".to_owned()]));
        }
        let report = check(&history(states));
        // One on each node, at the grant; the replay goes on from the node's own state.
        assert_eq!(report.violations.len(), 2, "{report}");
        assert!(
            report
                .violations
                .iter()
                .all(|v| v.rule == Rule::AuthState && v.detail.contains("op 4")),
            "{report}"
        );
    }

    #[test]
    fn nodes_that_differ_or_lose_an_acknowledged_change_are_found() {
        let mut history = history(good_states());
        for record in &mut history {
            if let Record::NodeAuth { node: 2, states } = record {
                states.pop();
            }
        }
        let report = check(&history);
        assert_eq!(
            rules(&history),
            BTreeSet::from([Rule::AuthState]),
            "{report}"
        );
        // On every node: the acknowledged revoke is missing, and `$all`'s gap at 5 unexplained.
        let report = check(&super::tests::history(good_states()[..4].to_vec()));
        assert!(
            report
                .violations
                .iter()
                .any(|v| v.rule == Rule::AuthState && v.detail.contains("op 5")),
            "{report}"
        );
        assert!(
            report
                .violations
                .iter()
                .any(|v| v.rule == Rule::PositionOrder),
            "{report}"
        );
    }

    #[test]
    fn a_node_that_lets_a_revoked_token_in_after_applying_the_revocation_is_found() {
        let probe = |op: u64, node: u64, accepted: bool| Record::AuthProbe {
            op,
            at_ms: op * 10 + 6,
            node,
            token_id: "t1".into(),
            accepted,
        };
        let mut good = history(good_states());
        good.extend([probe(3, 1, true), probe(3, 2, true), probe(5, 1, false)]);
        let report = check(&good);
        assert!(report.is_ok(), "{report}");
        let mut bad = good.clone();
        bad.push(probe(5, 2, true));
        let report = check(&bad);
        assert_eq!(rules(&bad), BTreeSet::from([Rule::AuthVerdict]), "{report}");
        assert!(report.violations[0].detail.contains("node 2"), "{report}");
    }

    #[test]
    fn a_change_the_state_before_must_refuse_is_found_when_stored() {
        let mut states = good_states();
        // The refused revoke (op 6) stored after all, changing nothing.
        let mut extra = states[4].clone();
        extra.id = Uuid::from_u128(6);
        extra.position = 7;
        states.push(extra);
        let report = check(&history(states));
        assert!(
            report.violations.iter().all(|v| v.rule == Rule::AuthState),
            "{report}"
        );
        assert!(
            report
                .violations
                .iter()
                .any(|v| v.detail.contains("must refuse")),
            "{report}"
        );
        assert!(
            report
                .violations
                .iter()
                .any(|v| v.detail.contains("refused (no such grant) but is stored")),
            "{report}"
        );
    }

    /// The good history, then a role added (op 7, position 7), assigned to u1 (op 8, 8) and
    /// removed (op 9, 9), each acknowledged; with `removed_keeps_member`, node 2 stored the
    /// removal with u1 still assigned the role.
    fn role_history(removed_keeps_member: bool) -> Vec<Record> {
        let mut states = good_states();
        let mut at = |op: u64, roles: &[(&str, &[&str])], user_roles: &[(&str, &[&str])]| {
            let mut next = states.last().expect("a state").clone();
            next.id = Uuid::from_u128(u128::from(op));
            next.position = op;
            next.roles = roles
                .iter()
                .map(|(r, g)| ((*r).to_owned(), g.iter().map(|g| (*g).to_owned()).collect()))
                .collect();
            next.user_roles = user_roles
                .iter()
                .map(|(u, r)| ((*u).to_owned(), r.iter().map(|r| (*r).to_owned()).collect()))
                .collect();
            states.push(next);
        };
        at(7, &[("r1", &[])], &[]);
        at(8, &[("r1", &[])], &[("u1", &["r1"])]);
        at(9, &[], &[]);
        let mut history = history(states);
        for (op, change) in [
            (7, AuthChangeRef::AddRole { role: "r1".into() }),
            (
                8,
                AuthChangeRef::AssignRole {
                    user: "u1".into(),
                    role: "r1".into(),
                },
            ),
            (9, AuthChangeRef::RemoveRole { role: "r1".into() }),
        ] {
            history.push(super::tests::change(
                op,
                change,
                AuthOutcome::Ok { position: op },
            ));
        }
        for record in &mut history {
            if let Record::NodeAuth { node: 2, states } = record {
                if removed_keeps_member {
                    let last = states.last_mut().expect("a state");
                    last.user_roles
                        .insert("u1".into(), BTreeSet::from(["r1".to_owned()]));
                }
            }
        }
        history
    }

    #[test]
    fn roles_replay_and_a_removed_role_kept_by_its_member_is_found() {
        let report = check(&role_history(false));
        assert!(report.is_ok(), "{report}");
        let report = check(&role_history(true));
        assert!(
            report
                .violations
                .iter()
                .any(|v| v.rule == Rule::AuthState && v.detail.contains("op 9")),
            "{report}"
        );
    }
}
