//! Random requests against every route the reference documents (queue, auth,
//! worker-manager, purge-cache, secrets, index, hooks, notify, github): random parameters, query strings, bodies, content types and
//! callers.
//! Each answer is below 500, every refusal is Taskcluster's error body (or its unknown-route
//! 404 for a path no route matches; GitHub's webhook endpoint answers its own refusals in
//! plain text, as upstream's), and the server keeps serving.

use super::harness::*;
use serde_json::{json, Value};

/// Service, method and route of each documented endpoint, one a line.
const ROUTES: &str = "\
auth DELETE /clients/<clientId>
auth DELETE /roles/<roleId>
auth GET /audit/<entityType>/<entityId>
auth GET /aws/s3/<level>/<bucket>/<prefix>
auth GET /azure/<account>/containers
auth GET /azure/<account>/containers/<container>/<level>
auth GET /azure/<account>/table/<table>/<level>
auth GET /azure/<account>/tables
auth GET /azure/accounts
auth GET /clients/
auth GET /clients/<clientId>
auth GET /clients/<clientId>/audit
auth GET /gcp/credentials/<projectId>/<serviceAccount>
auth GET /ping
auth GET /__lbheartbeat__
auth GET /__version__
auth GET /__heartbeat__
auth GET /roleids/
auth GET /roles/
auth GET /roles/<roleId>
auth GET /roles2/
auth GET /scopes/current
auth GET /sentry/<project>/dsn
auth GET /test-authenticate-get/
auth GET /websocktunnel/<wstAudience>/<wstClient>
auth POST /authenticate-hawk
auth POST /clients/<clientId>
auth POST /clients/<clientId>/disable
auth POST /clients/<clientId>/enable
auth POST /clients/<clientId>/reset
auth POST /github/<appName>/<owner>/repo-token
auth POST /roles/<roleId>
auth POST /scopes/expand
auth POST /test-authenticate
auth PUT /clients/<clientId>
auth PUT /roles/<roleId>
queue GET /pending/<taskQueueId>
queue GET /ping
queue GET /__lbheartbeat__
queue GET /__version__
queue GET /__heartbeat__
queue GET /provisioners
queue GET /provisioners/<provisionerId>
queue GET /provisioners/<provisionerId>/worker-types
queue GET /provisioners/<provisionerId>/worker-types/<workerType>
queue GET /provisioners/<provisionerId>/worker-types/<workerType>/workers
queue GET /provisioners/<provisionerId>/worker-types/<workerType>/workers/<workerGroup>/<workerId>
queue GET /task-group/<taskGroupId>
queue GET /task-group/<taskGroupId>/list
queue GET /task-queues
queue GET /task-queues/<taskQueueId>
queue GET /task-queues/<taskQueueId>/claimed
queue GET /task-queues/<taskQueueId>/counts
queue GET /task-queues/<taskQueueId>/pending
queue GET /task/<taskId>
queue GET /task/<taskId>/artifact-content/<name>
queue GET /task/<taskId>/artifact-info/<name>
queue GET /task/<taskId>/artifacts
queue GET /task/<taskId>/artifacts/<name>
queue GET /task/<taskId>/dependents
queue GET /task/<taskId>/runs/<runId>/artifact-content/<name>
queue GET /task/<taskId>/runs/<runId>/artifact-info/<name>
queue GET /task/<taskId>/runs/<runId>/artifacts
queue GET /task/<taskId>/runs/<runId>/artifacts/<name>
queue GET /task/<taskId>/status
queue POST /claim-work/<taskQueueId>
queue POST /task-group/<taskGroupId>/cancel
queue POST /task-group/<taskGroupId>/priority
queue POST /task-group/<taskGroupId>/seal
queue POST /task/<taskId>/cancel
queue POST /task/<taskId>/priority
queue POST /task/<taskId>/rerun
queue POST /task/<taskId>/runs/<runId>/artifacts/<name>
queue POST /task/<taskId>/runs/<runId>/claim
queue POST /task/<taskId>/runs/<runId>/completed
queue POST /task/<taskId>/runs/<runId>/exception
queue POST /task/<taskId>/runs/<runId>/failed
queue POST /task/<taskId>/runs/<runId>/reclaim
queue POST /task/<taskId>/schedule
queue POST /tasks
queue POST /tasks/status
queue PUT /provisioners/<provisionerId>/worker-types/<workerType>/<workerGroup>/<workerId>
queue PUT /provisioners/<provisionerId>/worker-types/<workerType>/workers/<workerGroup>/<workerId>
queue PUT /task/<taskId>
queue PUT /task/<taskId>/runs/<runId>/artifacts/<name>
worker-manager DELETE /worker-pool/<workerPoolId>
worker-manager GET /providers
worker-manager GET /provisioners/<provisionerId>/worker-types/<workerType>/workers
worker-manager GET /provisioners/<provisionerId>/worker-types/<workerType>/workers/<workerGroup>/<workerId>
worker-manager GET /worker-pool-errors/<workerPoolId>
worker-manager GET /worker-pool-errors/stats
worker-manager GET /worker-pool/<workerPoolId>
worker-manager GET /worker-pool/<workerPoolId>/launch-configs
worker-manager GET /worker-pool/<workerPoolId>/stats
worker-manager GET /worker-pools
worker-manager GET /worker-pools/stats
worker-manager GET /workers/<workerPoolId>
worker-manager GET /workers/<workerPoolId>/<workerGroup>
worker-manager GET /workers/<workerPoolId>/<workerGroup>/<workerId>
worker-manager GET /workers/<workerPoolId>/<workerGroup>/<workerId>/should-terminate
worker-manager POST /worker-pool-errors/<workerPoolId>
worker-manager POST /worker-pool/<workerPoolId>
worker-manager POST /worker/register
worker-manager POST /worker/reregister
worker-manager PUT /worker-pool/<workerPoolId>
purge-cache GET /purge-cache/<workerPoolId>
purge-cache GET /purge-cache/list
purge-cache POST /purge-cache/<workerPoolId>
purge-cache GET /ping
secrets DELETE /secret/<name>
secrets GET /secret/<name>
secrets PUT /secret/<name>
secrets GET /secrets
secrets GET /ping
index GET /task/<indexPath>
index PUT /task/<namespace>
index DELETE /task/<namespace>
index GET /task/<indexPath>/artifacts/<name>
index POST /tasks/indexes
index GET /tasks/<namespace>
index POST /tasks/<namespace>
index GET /namespaces/<namespace>
index POST /namespaces/<namespace>
index GET /namespaces
index GET /ping
hooks GET /hooks
hooks GET /hooks/<hookGroupId>
hooks GET /hooks/<hookGroupId>/<hookId>
hooks PUT /hooks/<hookGroupId>/<hookId>
hooks POST /hooks/<hookGroupId>/<hookId>
hooks DELETE /hooks/<hookGroupId>/<hookId>
hooks GET /hooks/<hookGroupId>/<hookId>/status
hooks POST /hooks/<hookGroupId>/<hookId>/trigger
hooks GET /hooks/<hookGroupId>/<hookId>/token
hooks POST /hooks/<hookGroupId>/<hookId>/token
hooks POST /hooks/<hookGroupId>/<hookId>/trigger/<token>
hooks GET /hooks/<hookGroupId>/<hookId>/last-fires
hooks GET /ping
notify POST /email
notify POST /pulse
notify POST /matrix
notify POST /slack
notify POST /denylist/add
notify DELETE /denylist/delete
notify GET /denylist/list
notify GET /ping
github POST /github
github GET /builds
github POST /builds/<owner>/<repo>/cancel
github GET /repository/<owner>/<repo>/<branch>/badge.svg
github GET /repository/<owner>/<repo>
github GET /repository/<owner>/<repo>/<branch>/latest
github POST /repository/<owner>/<repo>/statuses/<sha>
github POST /repository/<owner>/<repo>/issues/<number>/comments
github POST /taskcluster-yml
github GET /ping
";

/// URL parameters: valid, invalid, encoded and hostile.
const PARAMS: &[&str] = &[
    "x",
    "",
    "%FF",
    "abc%2Fdef",
    "built-in",
    "succeed",
    "0",
    "-1",
    "99999999999",
    "AAAAAAAAAAAAAAAAAAAAAA",
    "%C3%A9",
    "..",
    "%00",
    "prov/wt",
    "a%20b",
    "public/log.txt",
    "__proto__",
    "static%2Ftaskcluster%2Froot",
];

const QUERIES: &[&str] = &[
    "limit=1",
    "limit=x",
    "continuationToken=zz",
    "foo=1",
    "bewit=abc",
    "limit=1&limit=2",
    "continuationToken=",
];

const KEYS: &[&str] = &[
    "taskQueueId",
    "provisionerId",
    "workerType",
    "created",
    "deadline",
    "expires",
    "payload",
    "metadata",
    "scopes",
    "routes",
    "dependencies",
    "priority",
    "rank",
    "data",
    "indexes",
    "taskId",
    "retries",
    "taskGroupId",
    "schedulerId",
    "tags",
    "name",
    "workerGroup",
    "workerId",
    "tasks",
    "reason",
    "storageType",
    "contentType",
    "url",
    "uploadId",
    "projectId",
    "clientScopes",
    "requiredScopes",
    "quarantineUntil",
    "newPriority",
    "taskIds",
    "taskQueueIds",
    "proposedUploadMethods",
    "hashes",
    "config",
    "providerId",
    "kind",
    "method",
    "resource",
    "authorization",
    "secret",
    "schedule",
    "task",
    "triggerSchema",
    "bindings",
    "hookGroupId",
    "hookId",
    "state",
    "body",
    "fakeEvent",
    "organization",
];

/// xorshift64*: the same requests on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

fn random_json(rng: &mut Rng, depth: usize) -> Value {
    match rng.below(10) {
        0..=3 if depth < 4 => {
            let n = rng.below(6);
            Value::Object(
                (0..n)
                    .map(|_| (rng.pick(KEYS).to_string(), random_json(rng, depth + 1)))
                    .collect(),
            )
        }
        4..=5 if depth < 4 => Value::Array(
            (0..rng.below(4))
                .map(|_| random_json(rng, depth + 1))
                .collect(),
        ),
        _ => rng
            .pick(&[
                json!(null),
                json!(true),
                json!(0),
                json!(-1),
                json!(1e308),
                json!(18446744073709551615u64),
                json!("x"),
                json!(""),
                json!("a".repeat(5000)),
                json!("2026-12-06T00:00:00.000Z"),
                json!("not-a-date"),
                json!("fQOWBkDRTnaNf8hhgWpdrQ"),
                json!("*"),
                json!("assume:anything"),
            ])
            .clone(),
    }
}

#[tokio::test]
async fn random_requests_get_error_bodies_never_a_server_error() {
    let server = Server::start(&[]).await;
    let callers = [
        ("static/taskcluster/root", ROOT_TOKEN),
        ("tester", "no-secret"),
        ("nobody", "no-such-token"),
    ];
    let routes: Vec<(&str, &str, &str)> = ROUTES
        .lines()
        .map(|l| {
            let mut parts = l.split(' ');
            let mut next = || parts.next().expect("service, method and route");
            (next(), next(), next())
        })
        .collect();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut answered = std::collections::BTreeMap::new();
    for _ in 0..1500 {
        let (service, method, route) = *rng.pick(&routes);
        let mut path = format!("/api/{service}/v1");
        for segment in route.split('/').skip(1) {
            path.push('/');
            if segment.starts_with('<') {
                path.push_str(rng.pick::<&str>(PARAMS));
            } else {
                path.push_str(segment);
            }
        }
        if rng.chance(30) {
            path.push('?');
            path.push_str(rng.pick::<&str>(QUERIES));
        }
        let (content_type, body) = match rng.below(10) {
            0..=4 => (
                Some("application/json"),
                random_json(&mut rng, 0).to_string().into_bytes(),
            ),
            5 => (Some("application/json"), b"{not json".to_vec()),
            6 => (
                *rng.pick(&[Some("application/json"), Some("text/plain"), None]),
                (0..rng.below(40)).map(|_| rng.next() as u8).collect(),
            ),
            _ => (None, Vec::new()),
        };
        let who = *rng.pick(&callers);
        let (status, reply) = server
            .call_raw(who, method, &path, content_type, &body)
            .await;
        assert!(
            status < 500,
            "{method} {path} {content_type:?} {:?} as {}: {status} {reply}",
            String::from_utf8_lossy(&body),
            who.0
        );
        let plain_text = service == "github" && route == "/github";
        if status >= 400 && reply.get("code").is_none() && !plain_text {
            assert_eq!(
                (status, &reply),
                (404, &json!({ "error": "Not found" })),
                "{method} {path}: without Taskcluster's error body"
            );
        }
        *answered.entry(status).or_insert(0) += 1;
    }
    // the requests reached the handlers: some succeeded, most were refused for their input
    assert!(answered.get(&200).copied().unwrap_or(0) > 0, "{answered:?}");
    assert!(answered.get(&400).copied().unwrap_or(0) > 0, "{answered:?}");
    let (status, _) = server
        .root_call("GET", "/api/queue/v1/ping", &json!({}))
        .await;
    assert_eq!(status, 200);
}
