//! Users, tokens and grants (`Command::Auth`): replicated records in `$auth`, applied
//! deterministically, retried safely, never shown to reads, and carried by snapshots.

use cairn_raft_store::auth::{
    Action, AuthChange, AuthCommand, AuthRefusal, AuthResult, Grant, AUTH_STREAM,
    BOOTSTRAP_TOKEN_ID, BOOTSTRAP_USER, EVERY_NAME,
};
use cairn_raft_store::{Command, Entry, EntryPayload, ExpectedRevision, Response};
use uuid::Uuid;

use crate::common::*;
use crate::snapshot::ship;

const T0: u64 = 1_700_000_000_000;

fn auth(change: AuthChange) -> AuthCommand {
    AuthCommand {
        change,
        id: Uuid::new_v4(),
        created_unix_ms: T0,
    }
}

async fn apply_auth(s: &mut TestStore, command: AuthCommand) -> AuthResult {
    let entry = Entry {
        log_id: log_id(s.next_index),
        payload: EntryPayload::Normal(Command::Auth(command)),
    };
    s.next_index += 1;
    match s
        .sm()
        .apply_entries(vec![entry])
        .await
        .expect("apply")
        .remove(0)
    {
        Response::Auth(result) => result,
        other => panic!("unexpected response {other:?}"),
    }
}

fn bootstrap() -> AuthCommand {
    auth(AuthChange::Bootstrap {
        token_hash: "ab".repeat(32),
    })
}

fn add_reader() -> Vec<AuthCommand> {
    vec![
        auth(AuthChange::AddUser {
            user: "reader".into(),
            password_hash: Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into()),
        }),
        auth(AuthChange::Grant {
            user: "reader".into(),
            grant: Grant {
                action: Action::Read,
                prefix: "orders-".into(),
            },
        }),
    ]
}

#[test]
fn users_tokens_and_grants_apply_in_order_and_a_retry_changes_nothing() {
    for (name, make) in both() {
        run(async {
            let mut s = make();
            let view = s.store.state_machine.auth_view();
            assert!(!view.current().expect("state").is_initialized(), "{name}");
            let boot = bootstrap();
            assert!(matches!(
                apply_auth(&mut s, boot.clone()).await,
                AuthResult::Done { .. }
            ));
            // A retry of the same command (same id) is recognised, not applied twice.
            assert!(matches!(
                apply_auth(&mut s, boot).await,
                AuthResult::AlreadyDone { .. }
            ));
            // A second bootstrap (another node's admin secret) is refused.
            assert_eq!(
                apply_auth(&mut s, bootstrap()).await,
                AuthResult::Refused(AuthRefusal::AlreadyInitialized)
            );
            for command in add_reader() {
                assert!(matches!(
                    apply_auth(&mut s, command).await,
                    AuthResult::Done { .. }
                ));
            }
            let state = view.current().expect("state");
            assert!(state.allows("reader", Action::Read, "orders-1"), "{name}");
            assert!(!state.allows("reader", Action::Write, "orders-1"), "{name}");
            assert!(state.allows(BOOTSTRAP_USER, Action::Admin, EVERY_NAME));
            assert!(state.tokens.contains_key(BOOTSTRAP_TOKEN_ID));

            // A revoked token is gone from the view at once.
            let create = auth(AuthChange::CreateToken {
                token_id: "t-1".into(),
                user: "reader".into(),
                token_hash: "cd".repeat(32),
                expires_unix_ms: None,
            });
            apply_auth(&mut s, create).await;
            assert!(view.current().expect("state").tokens.contains_key("t-1"));
            let revoke = auth(AuthChange::RevokeToken {
                token_id: "t-1".into(),
            });
            assert!(matches!(
                apply_auth(&mut s, revoke).await,
                AuthResult::Done { .. }
            ));
            assert!(!view.current().expect("state").tokens.contains_key("t-1"));
        });
    }
}

#[test]
fn a_refused_change_writes_nothing_and_the_state_is_never_read_through_all() {
    run(async {
        let mut s = TestStore::mem();
        apply_auth(&mut s, bootstrap()).await;
        s.apply(append("orders-1", ExpectedRevision::Any, events(2)))
            .await;
        let before = s.store.reader.next_position().expect("position");
        let refused = apply_auth(
            &mut s,
            auth(AuthChange::RemoveUser {
                user: BOOTSTRAP_USER.into(),
            }),
        )
        .await;
        assert!(matches!(
            refused,
            AuthResult::Refused(AuthRefusal::LastAdmin { .. })
        ));
        assert_eq!(s.store.reader.next_position().expect("position"), before);
        // Positions of `$auth` exist, but no read of `$all` shows them.
        assert!(s.all().iter().all(|e| e.stream != AUTH_STREAM));
        assert_eq!(s.all().len(), 2);
    });
}

#[test]
fn an_installed_snapshot_brings_the_security_state_and_the_view_sees_it() {
    run(async {
        let mut leader = TestStore::mem();
        apply_auth(&mut leader, bootstrap()).await;
        for command in add_reader() {
            apply_auth(&mut leader, command).await;
        }
        let snapshot = leader.build_snapshot().await;
        let mut follower = TestStore::mem();
        let view = follower.store.state_machine.auth_view();
        assert!(!view.current().expect("state").is_initialized());
        ship(snapshot, &mut follower).await;
        let state = view.current().expect("state");
        assert!(state.allows("reader", Action::Read, "orders-9"));
        assert_eq!(
            *state,
            *leader
                .store
                .state_machine
                .auth_view()
                .current()
                .expect("state")
        );
    });
}
