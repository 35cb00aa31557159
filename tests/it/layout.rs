//! The workspace's dependency rules (DESIGN.md, "Layout"), checked from every Cargo.toml.

use std::collections::BTreeMap;

fn deps(crate_dir: &str) -> Vec<String> {
    let path = format!("{}/{crate_dir}/Cargo.toml", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let doc: toml::Table = text.parse().unwrap();
    let mut out = Vec::new();
    for section in ["dependencies", "build-dependencies"] {
        if let Some(t) = doc.get(section).and_then(|d| d.as_table()) {
            out.extend(t.keys().cloned());
        }
    }
    out
}

#[test]
fn dependencies_point_one_way_and_core_has_no_io() {
    let allowed: BTreeMap<&str, &[&str]> = BTreeMap::from([
        ("core", &[][..]),
        ("projections", &["taskledger-core"][..]),
        (
            "gateways",
            &["taskledger-core", "taskledger-projections"][..],
        ),
        (
            "workers",
            &["taskledger-core", "taskledger-projections"][..],
        ),
        ("bridge", &["taskledger-core", "taskledger-projections"][..]),
    ]);
    for (dir, ok) in &allowed {
        for d in deps(dir).iter().filter(|d| d.starts_with("taskledger")) {
            assert!(ok.contains(&d.as_str()), "{dir} must not depend on {d}");
        }
    }
    let io = [
        "tokio",
        "rocksdb",
        "rdkafka",
        "axum",
        "lapin",
        "object_store",
        "reqwest",
        "hyper",
    ];
    for d in deps("core") {
        assert!(
            !io.contains(&d.as_str()),
            "core must not depend on the I/O crate {d}"
        );
    }
}
