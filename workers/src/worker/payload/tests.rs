use super::*;
use serde_json::json;

fn limits() -> Limits {
    let now = Utc::now();
    Limits {
        task_deadline: now + chrono::Duration::hours(1),
        task_expires: now + chrono::Duration::days(7),
        max_task_run_time_secs: 3600,
        worker_groups: vec!["staff".into(), "docker".into()],
    }
}

#[test]
fn minimal_payload_gets_defaults() {
    let l = limits();
    let p = parse(&json!({"command": [["true"]], "maxRunTime": 10}), &l).unwrap();
    assert_eq!(p.command, vec![vec!["true".to_string()]]);
    assert_eq!(p.max_run_time_secs, 10);
    assert!(p.features.live_log && p.features.backing_log);
    assert_eq!(p.logs.live, DEFAULT_LIVE_LOG);
    assert_eq!(p.logs.backing, DEFAULT_BACKING_LOG);
    assert!(p.artifacts.is_empty());
}

#[test]
fn artifacts_default_name_and_expiry() {
    let l = limits();
    let p = parse(
        &json!({"command": [["true"]], "maxRunTime": 10,
                "artifacts": [{"type": "file", "path": "out/a.txt"},
                              {"type": "directory", "path": "out", "name": "public/out"}]}),
        &l,
    )
    .unwrap();
    assert_eq!(p.artifacts[0].name, "out/a.txt");
    assert_eq!(p.artifacts[0].expires, l.task_expires);
    assert_eq!(p.artifacts[1].kind, ArtifactKind::Directory);
    assert_eq!(p.artifacts[1].name, "public/out");
}

#[test]
fn refusals_name_every_problem() {
    let l = limits();
    let early = (l.task_deadline - chrono::Duration::minutes(5)).to_rfc3339();
    let errs = parse(
        &json!({"command": [[]], "maxRunTime": 7200,
                "mounts": [{"file": "x", "content": {"raw": "y"}, "format": "gz"}],
                "features": {"interactive": true},
                "taskclusterProxyInterface": "docker-bridge",
                "artifacts": [{"type": "socket", "path": "a"},
                              {"type": "file", "path": "b", "expires": early}]}),
        &l,
    )
    .unwrap_err();
    let all = errs.join("\n");
    for needle in [
        "command[0]",
        "maxRunTime",
        "mounts",
        "interactive",
        "taskclusterProxyInterface",
        "artifacts[0].type",
        "artifacts[1].expires",
    ] {
        assert!(all.contains(needle), "{needle} missing from {all}");
    }
}

#[test]
fn caches_and_file_mounts_are_read_and_the_rest_refused_by_name() {
    let l = limits();
    let p = parse(
        &json!({"command": [["true"]], "maxRunTime": 10, "mounts": [
            {"directory": "cache/cargo", "cacheName": "cargo"},
            {"file": "in/a.txt", "content": {"raw": "hello"}},
            {"file": "b.bin", "content": {"base64": "AAEC"}},
            {"file": "c", "content": {"url": "https://example.com/c", "sha256": "0".repeat(64)}},
            {"file": "d", "content": {"taskId": "fF8FHWmuRVqX6Rk2yGbWBQ", "artifact": "public/d"}}
        ]}),
        &l,
    )
    .unwrap();
    assert_eq!(
        p.mounts,
        [
            Mount::Cache {
                directory: "cache/cargo".into(),
                cache_name: "cargo".into()
            },
            Mount::File {
                file: "in/a.txt".into(),
                content: Content::Bytes(b"hello".to_vec())
            },
            Mount::File {
                file: "b.bin".into(),
                content: Content::Bytes(vec![0, 1, 2])
            },
            Mount::File {
                file: "c".into(),
                content: Content::Url {
                    url: "https://example.com/c".into(),
                    sha256: Some("0".repeat(64))
                }
            },
            Mount::File {
                file: "d".into(),
                content: Content::Artifact {
                    task_id: "fF8FHWmuRVqX6Rk2yGbWBQ".into(),
                    artifact: "public/d".into(),
                    sha256: None
                }
            },
        ]
    );
    let refused = |mount: serde_json::Value| {
        parse(
            &json!({"command": [["true"]], "maxRunTime": 10, "mounts": [mount]}),
            &l,
        )
        .unwrap_err()
        .join("\n")
    };
    for (mount, needle) in [
        (
            json!({"directory": "d", "content": {"url": "https://x/a.zip"}, "format": "zip"}),
            "read-only directory",
        ),
        (
            json!({"file": "f", "content": {"raw": "x"}, "format": "gz"}),
            "compressed",
        ),
        (
            json!({"directory": "c", "cacheName": "c", "content": {"raw": "x"}, "format": "zip"}),
            "preloaded",
        ),
        (
            json!({"file": "../escape", "content": {"raw": "x"}}),
            "inside the task directory",
        ),
        (
            json!({"directory": "/abs", "cacheName": "c"}),
            "inside the task directory",
        ),
        (
            json!({"file": "f", "content": {"namespace": "a.b", "artifact": "x"}}),
            "index",
        ),
        (
            json!({"file": "f", "content": {"raw": "x".repeat(64 * 1024 + 1)}}),
            "longer than",
        ),
        (
            json!({"file": "f", "content": {"base64": "not base64!"}}),
            "not base64",
        ),
        (
            json!({"file": "f", "content": {"url": "https://x", "sha256": "XYZ"}}),
            "sha256",
        ),
        (
            json!({"file": "f", "content": {"url": "ftp://x"}}),
            "http(s)",
        ),
        (
            json!({"file": "f", "content": {"taskId": "x"}}),
            "needs `content.artifact`",
        ),
        (json!({"file": "f"}), "needs `content`"),
        (json!({"cacheName": "c"}), "`directory`"),
        (json!({"what": 1}), "must be a file mount"),
        (
            json!({"file": "generic-worker/live_backing.log", "content": {"raw": "x"}}),
            "task's log",
        ),
    ] {
        let all = refused(mount.clone());
        assert!(
            all.contains("mounts[0]") && all.contains(needle),
            "{mount}: {all}"
        );
    }
}

#[test]
fn mount_points_may_not_overlap_and_wrapped_base64_is_read() {
    let l = limits();
    let errs = parse(
        &json!({"command": [["true"]], "maxRunTime": 10, "mounts": [
            {"directory": "a", "cacheName": "x"},
            {"directory": "a/b", "cacheName": "y"},
            {"file": "a", "content": {"raw": "z"}},
            {"file": "ab", "content": {"raw": "fine: not inside a"}}
        ]}),
        &l,
    )
    .unwrap_err();
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(errs[0].contains("mounts[1]") && errs[0].contains("overlaps"));
    assert!(errs[1].contains("mounts[2]") && errs[1].contains("overlaps"));
    let p = parse(
        &json!({"command": [["true"]], "maxRunTime": 10, "mounts": [
            {"file": "w", "content": {"base64": "aGVs\nbG8=\n"}}
        ]}),
        &l,
    )
    .unwrap();
    assert_eq!(
        p.mounts[0],
        Mount::File {
            file: "w".into(),
            content: Content::Bytes(b"hello".to_vec())
        }
    );
}

#[test]
fn unknown_fields_and_wrong_types_are_refused() {
    let l = limits();
    assert!(parse(
        &json!({"command": [["true"]], "maxRunTime": 1, "bogus": 1}),
        &l
    )
    .is_err());
    assert!(parse(&json!({"command": "true", "maxRunTime": 1}), &l).is_err());
    assert!(parse(&json!({"command": [["true"]]}), &l).is_err());
    assert!(parse(&json!({"image": "ubuntu", "command": ["true"]}), &l).is_err());
    assert!(parse(&json!(["not", "an", "object"]), &l).is_err());
}

#[test]
fn content_types_by_extension() {
    assert_eq!(
        content_type_for("public/logs/x.log"),
        "text/plain; charset=utf-8"
    );
    assert_eq!(content_type_for("a.jsonl"), "application/jsonl");
    assert_eq!(content_type_for("a.TAR"), "application/x-tar");
    assert_eq!(content_type_for("noext"), "application/octet-stream");
}

#[test]
fn os_groups_must_be_the_workers_own() {
    let l = limits();
    let p = parse(
        &json!({"command": [["true"]], "maxRunTime": 10, "osGroups": ["docker", "Staff"]}),
        &l,
    );
    assert!(p.is_ok(), "{p:?}");
    let errors = parse(
        &json!({"command": [["true"]], "maxRunTime": 10, "osGroups": ["docker", "wheel"]}),
        &l,
    )
    .unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("\"wheel\""), "{errors:?}");
}
