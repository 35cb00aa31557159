//! Role expansion: a request's scopes through 1,000 roles (a realistic deployment has a few
//! hundred), uncached (`RoleSet::expand`, what every request would pay) against the auth
//! projection's cached expansion (what requests actually pay), in one run.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::sync::Arc;
use taskledger_core::access::roles::RoleSet;
use taskledger_core::access::AuthEvent;
use taskledger_core::envelope::{Actor, Envelope, EventId};
use taskledger_core::time::Millis;
use taskledger_projections::single::Service;
use taskledger_projections::{store, AuthView};

/// 1,000 roles: 100 projects, each with an admin role assuming a dev role, a parameterized
/// repo role, and filler roles nobody assumes.
fn roles() -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for p in 0..100 {
        out.push((
            format!("project:p{p}:admin"),
            vec![
                format!("assume:project:p{p}:dev"),
                format!("secrets:get:project/p{p}/*"),
                format!("queue:create-task:highest:proj-p{p}/*"),
            ],
        ));
        out.push((
            format!("project:p{p}:dev"),
            vec![
                format!("queue:create-task:lowest:proj-p{p}/*"),
                format!("index:insert-task:project.p{p}.*"),
                "assume:repo:github.com/org/common:*".to_string(),
            ],
        ));
        for f in 0..8 {
            out.push((
                format!("filler:p{p}:{f}"),
                vec![format!("filler-scope:{p}:{f}")],
            ));
        }
    }
    out.push((
        "repo:github.com/org/common:*".to_string(),
        vec!["queue:route:index.common.<..>.*".to_string()],
    ));
    out
}

fn bench(c: &mut Criterion) {
    let set = RoleSet::new(roles());
    let request: Vec<String> = vec![
        "assume:project:p42:admin".into(),
        "assume:anonymous".into(),
        "queue:claim-work:proj-p42/*".into(),
    ];
    let dir = std::env::temp_dir().join(format!("taskledger-bench-roles-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let view = Arc::new(AuthView::open(store::open(&dir).unwrap()).unwrap());
    let envelopes: Vec<Envelope<AuthEvent>> = roles()
        .into_iter()
        .map(|(role_id, scopes)| Envelope {
            event_id: EventId::new(),
            stream_id: format!("role/{role_id}"),
            sequence: 1,
            time: Millis::now(),
            actor: Actor::system("bench"),
            causation_id: None,
            writer_epoch: 1,
            payload: AuthEvent::RoleCreated {
                role_id,
                description: String::new(),
                scopes,
            },
        })
        .collect();
    let offsets: Vec<u64> = (0..envelopes.len() as u64).collect();
    view.apply(&offsets, envelopes.len() as u64, &envelopes)
        .unwrap();
    assert_eq!(
        view.expand(request.clone()).as_slice(),
        set.expand(&request).as_slice()
    );

    let mut g = c.benchmark_group("role_expansion_1000_roles");
    g.throughput(Throughput::Elements(1));
    g.bench_function("uncached", |b| b.iter(|| set.expand(&request)));
    g.bench_function("projection_cached", |b| {
        b.iter(|| view.expand(request.clone()))
    });
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench);
criterion_main!(benches);
