use super::*;

fn token() -> Sealed {
    Sealed {
        nonce: [7; 12],
        ciphertext: vec![1, 2, 3],
    }
}

fn create(id: &str, scopes_: &[&str]) -> AuthCommand {
    AuthCommand::CreateClient {
        client_id: id.into(),
        description: "d".into(),
        expires: Millis(10_000),
        scopes: scopes_.iter().map(|s| s.to_string()).collect(),
        delete_on_expiration: true,
        token: token(),
    }
}

fn run(state: &mut AuthState, cmd: AuthCommand, now: i64) -> Result<Vec<AuthEvent>, AuthError> {
    let events = state.decide(&cmd, Millis(now))?;
    for e in &events {
        state.apply(e, Millis(now));
    }
    Ok(events)
}

#[test]
fn use_is_recorded_at_most_every_six_hours_in_its_own_stream() {
    let mut s = AuthState::default();
    run(&mut s, create("c", &["a"]), 1_000).unwrap();
    let used = AuthCommand::MarkClientUsed {
        client_id: "c".into(),
    };
    assert_eq!(used.stream_id(), "client-usage/c");
    // created counts as used: nothing until six hours later
    assert_eq!(
        run(&mut s, used.clone(), 1_000 + USED_REFRESH_MS - 1),
        Ok(vec![])
    );
    let events = run(&mut s, used.clone(), 1_000 + USED_REFRESH_MS).unwrap();
    assert_eq!(
        events,
        vec![AuthEvent::ClientUsed {
            client_id: "c".into()
        }]
    );
    assert_eq!(events[0].stream_id(), "client-usage/c");
    assert!(!events[0].is_audited());
    assert_eq!(
        s.clients["c"].last_date_used,
        Millis(1_000 + USED_REFRESH_MS)
    );
    // a use changes nothing else about the client
    assert_eq!(s.clients["c"].last_modified, Millis(1_000));
    assert_eq!(run(&mut s, used, 1_000 + USED_REFRESH_MS + 1), Ok(vec![]));
    let unknown = AuthCommand::MarkClientUsed {
        client_id: "nobody".into(),
    };
    assert_eq!(
        run(&mut s, unknown, 1_000 + 10 * USED_REFRESH_MS),
        Ok(vec![])
    );
}

#[test]
fn client_lifecycle() {
    let mut s = AuthState::default();
    // kept in the order given (upstream stores them so), a repeat dropped
    run(&mut s, create("c", &["b", "a", "a"]), 1).unwrap();
    assert_eq!(s.clients["c"].scopes, vec!["b", "a"]);
    assert_eq!(
        run(&mut s, create("c", &[]), 2),
        Err(AuthError::ClientExists("c".into()))
    );
    assert_eq!(
        run(
            &mut s,
            AuthCommand::EnableClient {
                client_id: "c".into()
            },
            3
        ),
        Ok(vec![AuthEvent::Repeated {
            repeat: AuthRepeat::ClientEnabled {
                client_id: "c".into()
            }
        }])
    );
    assert_eq!(s.clients["c"].last_modified, Millis(1), "nothing changed");
    assert_eq!(
        run(
            &mut s,
            AuthCommand::DisableClient {
                client_id: "c".into()
            },
            3
        )
        .unwrap()
        .len(),
        1
    );
    assert!(s.clients["c"].disabled);
    let upd = AuthCommand::UpdateClient {
        client_id: "c".into(),
        description: "new".into(),
        expires: Millis(20_000),
        scopes: None,
        delete_on_expiration: None,
    };
    run(&mut s, upd, 4).unwrap();
    assert_eq!(s.clients["c"].scopes, vec!["b", "a"]);
    assert_eq!(s.clients["c"].last_modified, Millis(4));
    // not yet expired: the reactor's command does nothing
    assert_eq!(
        run(
            &mut s,
            AuthCommand::ExpireClient {
                client_id: "c".into()
            },
            5
        ),
        Ok(vec![])
    );
    let gone = run(
        &mut s,
        AuthCommand::ExpireClient {
            client_id: "c".into(),
        },
        20_001,
    )
    .unwrap();
    assert_eq!(gone[0].action_type(), "expired");
    assert!(s.clients.is_empty());
    assert_eq!(
        run(
            &mut s,
            AuthCommand::DeleteClient {
                client_id: "c".into()
            },
            6
        ),
        Ok(vec![AuthEvent::Repeated {
            repeat: AuthRepeat::ClientDeleted {
                client_id: "c".into()
            }
        }])
    );
    assert!(s.clients.is_empty(), "an absent client stays absent");
    assert_eq!(
        run(
            &mut s,
            AuthCommand::ResetAccessToken {
                client_id: "c".into(),
                token: token()
            },
            7
        ),
        Err(AuthError::ClientNotFound("c".into()))
    );
    assert!(run(&mut s, create("d", &["x**"]), 8).is_err());
}

#[test]
fn roles_are_idempotent_and_acyclic() {
    let mut s = AuthState::default();
    let mk = |id: &str, scopes_: &[&str]| AuthCommand::CreateRole {
        role_id: id.into(),
        description: "d".into(),
        scopes: scopes_.iter().map(|x| x.to_string()).collect(),
    };
    run(&mut s, mk("r", &["b", "assume:q"]), 1).unwrap();
    let role = s.roles["r"].clone();
    let again = run(&mut s, mk("r", &["assume:q", "b"]), 2).unwrap();
    assert_eq!(
        again,
        [AuthEvent::Repeated {
            repeat: AuthRepeat::RoleCreated {
                role_id: "r".into()
            }
        }]
    );
    assert!(!again[0].is_audited() && !again[0].changes_state());
    assert_eq!(s.roles["r"], role, "a repeated creation changes nothing");
    assert_eq!(
        run(&mut s, mk("r", &["c"]), 2),
        Err(AuthError::RoleExists("r".into()))
    );
    run(&mut s, mk("q", &["qq"]), 3).unwrap();
    assert_eq!(
        s.role_set.expand_role("r"),
        vec!["assume:q", "assume:r", "b", "qq"]
    );
    let cyc = AuthCommand::UpdateRole {
        role_id: "q".into(),
        description: "d".into(),
        scopes: vec!["assume:r".into()],
    };
    assert!(matches!(
        run(&mut s, cyc, 4),
        Err(AuthError::InvalidRole(_))
    ));
    run(
        &mut s,
        AuthCommand::DeleteRole {
            role_id: "q".into(),
        },
        5,
    )
    .unwrap();
    assert_eq!(
        s.role_set.expand_role("r"),
        vec!["assume:q", "assume:r", "b"]
    );
}

/// Pins the V1 wire bytes of the auth events (regenerate with UPDATE_EXPECT=1 only when
/// adding a variant; a changed file for an existing variant is a broken log).
#[test]
fn golden_auth_events_v1() {
    let events = vec![
        AuthEvent::ClientCreated {
            client_id: "c".into(),
            description: "d".into(),
            expires: Millis(1_700_000_000_000),
            scopes: vec!["a".into()],
            delete_on_expiration: true,
            token: token(),
        },
        AuthEvent::ClientDeleted {
            client_id: "c".into(),
            expired: true,
        },
        AuthEvent::RoleCreated {
            role_id: "r*".into(),
            description: "".into(),
            scopes: vec!["x<..>".into()],
        },
        AuthEvent::ClientUsed {
            client_id: "c".into(),
        },
        AuthEvent::Repeated {
            repeat: AuthRepeat::RoleDeleted {
                role_id: "r*".into(),
            },
        },
    ];
    crate::codec::assert_golden_events(
        "client/c",
        events,
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/golden/auth/events_v1.hex"
        ),
    );
}
