//! The cost of authenticating a request (auth issue's benchmark): a Hawk-signed GET from a
//! client holding 50 roles that expand to ~1,000 scopes, through the same `Clients` source the
//! gateway uses (token unsealed with AES-GCM, scopes expanded through the projection's cache,
//! MAC checked), and one scope check against those scopes; in one run.

/// The allocator the `taskledger` binary runs with.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{criterion_group, criterion_main, Criterion};
use std::sync::Arc;
use taskledger_core::access::seal::SealKey;
use taskledger_core::access::AuthEvent;
use taskledger_core::auth::{authenticate, HawkRequest};
use taskledger_core::envelope::{Actor, Envelope, EventId};
use taskledger_core::scopes::ScopeExpr;
use taskledger_core::time::Millis;
use taskledger_gateways::hawk::Clients;
use taskledger_projections::single::Service;
use taskledger_projections::{store, AuthView};

const TOKEN: &str = "bench-token-bench-token-bench-token-bench-to";

fn env(seq: u64, stream: String, payload: AuthEvent) -> Envelope<AuthEvent> {
    Envelope {
        event_id: EventId::new(),
        stream_id: stream,
        sequence: seq,
        time: Millis::now(),
        actor: Actor::system("bench"),
        causation_id: None,
        writer_epoch: 1,
        payload,
    }
}

fn bench(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("taskledger-bench-authn-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let view = Arc::new(AuthView::open(store::open(&dir).unwrap()).unwrap());
    let key = SealKey::new([7; 32]);
    let mut events = Vec::new();
    for r in 0..50 {
        let scopes = (0..20).map(|i| format!("project:p{r}:scope-{i}")).collect();
        events.push(env(
            1,
            format!("role/r{r}"),
            AuthEvent::RoleCreated {
                role_id: format!("team:r{r}"),
                description: String::new(),
                scopes,
            },
        ));
    }
    events.push(env(
        1,
        "client/bench".into(),
        AuthEvent::ClientCreated {
            client_id: "bench".into(),
            description: String::new(),
            expires: Millis::now().plus(86_400_000),
            scopes: (0..50)
                .map(|r| format!("assume:team:r{r}"))
                .chain(["auth:current-scopes".to_string()])
                .collect(),
            delete_on_expiration: false,
            token: key.seal("bench", TOKEN, [1; 12]),
        },
    ));
    let offsets: Vec<u64> = (0..events.len() as u64).collect();
    view.apply(&offsets, events.len() as u64, &events).unwrap();
    let clients = Clients::new(view, key);

    let resource = "/api/auth/v1/scopes/current";
    let creds = hawk::Credentials {
        id: "bench".into(),
        key: hawk::Key::new(TOKEN.as_bytes(), hawk::DigestAlgorithm::Sha256).unwrap(),
    };
    let header = hawk::RequestBuilder::new("GET", "127.0.0.1", 8080, resource)
        .request()
        .make_header(&creds)
        .unwrap();
    let authorization = format!("Hawk {header}");
    let req = HawkRequest {
        method: "GET",
        resource,
        host: "127.0.0.1",
        port: 8080,
        authorization: &authorization,
        content_type: None,
        body: b"",
        check_hash: true,
    };
    let got = authenticate(&req, &clients, chrono::Utc::now()).unwrap();
    println!("the client's request scopes: {}", got.scopes.len());
    let check = ScopeExpr::scope("project:p49:scope-19");
    assert!(check.satisfied_by(&got.scopes));

    let mut g = c.benchmark_group("authn_50_roles_1000_scopes");
    g.bench_function("authenticate_hawk_get", |b| {
        b.iter(|| authenticate(&req, &clients, chrono::Utc::now()).unwrap())
    });
    g.bench_function("scope_check", |b| {
        b.iter(|| check.satisfied_by(&got.scopes))
    });
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench);
criterion_main!(benches);
