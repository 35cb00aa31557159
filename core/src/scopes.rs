//! Scopes and scope expressions (auth.md §5): satisfaction, canonical order,
//! normalized scope sets, `AllOf`/`AnyOf` expressions and the text of an
//! `InsufficientScopes` error.
//!
//! **Invariant:** pure functions over strings; no role expansion here.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

/// A scope is a string of printable ASCII (0x20–0x7e); the empty string is a
/// valid scope.
pub fn is_valid_scope(s: &str) -> bool {
    s.bytes().all(|b| (0x20..=0x7e).contains(&b))
}

/// Whether the held scope `held` satisfies the required scope `required`:
/// equal, or `held` ends in `*` and `required` starts with the rest of `held`.
/// Only a trailing `*` is special.
pub fn satisfies(held: &str, required: &str) -> bool {
    if held == required {
        return true;
    }
    match held.strip_suffix('*') {
        Some(prefix) => required.starts_with(prefix),
        None => false,
    }
}

/// Whether any scope in `held` satisfies `required`.
pub fn any_satisfies(held: &[String], required: &str) -> bool {
    held.iter().any(|g| satisfies(g, required))
}

/// Up to this many (required × held) pairs, `covered` asks `any_satisfies` for each required
/// scope; beyond, it sorts both sides and sweeps once.
const PAIRWISE_MAX: usize = 1 << 16;

/// For each required scope, whether some scope in `held` satisfies it. Checking each against
/// every held scope costs required × held comparisons, and both lists can come from one
/// request body (a certificate's scopes, `testAuthenticate`'s two lists, a task's scopes
/// against a client's expansion): hundreds of thousands each would be minutes of CPU. Past
/// `PAIRWISE_MAX` pairs this sorts both sides and sweeps them once, in time about linear in
/// their bytes.
pub fn covered<R: AsRef<str>>(held: &[String], required: &[R]) -> Vec<bool> {
    if required.len().saturating_mul(held.len()) <= PAIRWISE_MAX {
        return required
            .iter()
            .map(|r| any_satisfies(held, r.as_ref()))
            .collect();
    }
    sweep(held, required)
}

/// Whether `held` satisfies every scope of `required` (`covered`, all true).
pub fn covers_all<R: AsRef<str>>(held: &[String], required: &[R]) -> bool {
    covered(held, required).into_iter().all(|hit| hit)
}

fn sweep<R: AsRef<str>>(held: &[String], required: &[R]) -> Vec<bool> {
    let mut exact: Vec<&str> = held.iter().map(String::as_str).collect();
    let mut stars: Vec<&str> = held.iter().filter_map(|h| h.strip_suffix('*')).collect();
    exact.sort_unstable();
    stars.sort_unstable();
    let mut order: Vec<usize> = (0..required.len()).collect();
    order.sort_unstable_by(|&a, &b| required[a].as_ref().cmp(required[b].as_ref()));
    let mut out = vec![false; required.len()];
    // In byte order every string starting with `p` follows `p` in one unbroken run. So the
    // star prefixes pushed so far that can still cover what comes next form a chain, each a
    // prefix of the next, and one that does not cover a string covers nothing after it.
    let mut chain: Vec<&str> = Vec::new();
    let (mut e, mut k) = (0, 0);
    for i in order {
        let r = required[i].as_ref();
        while e < exact.len() && exact[e] < r {
            e += 1;
        }
        while k < stars.len() && stars[k] <= r {
            let p = stars[k];
            k += 1;
            while chain.last().is_some_and(|top| !p.starts_with(top)) {
                chain.pop();
            }
            chain.push(p);
        }
        while chain.last().is_some_and(|top| !r.starts_with(top)) {
            chain.pop();
        }
        out[i] = !chain.is_empty() || exact.get(e) == Some(&r);
    }
    out
}

/// Taskcluster's canonical scope order (`scopeCompare`): compare with the
/// trailing `*` stripped; when those are equal the starred scope comes first.
/// Example order: `*`, (the empty string), `a*`, `a`, `a(`, `aa`, `b`.
pub fn scope_compare(a: &str, b: &str) -> Ordering {
    let (a_base, a_star) = split_star(a);
    let (b_base, b_star) = split_star(b);
    // Scopes are ASCII, so byte order is JavaScript's UTF-16 order.
    a_base
        .as_bytes()
        .cmp(b_base.as_bytes())
        // `true` (starred) sorts first.
        .then_with(|| b_star.cmp(&a_star))
}

fn split_star(s: &str) -> (&str, bool) {
    match s.strip_suffix('*') {
        Some(base) => (base, true),
        None => (s, false),
    }
}

/// Normalize a scope set: drop duplicates and every scope satisfied by another
/// (star) scope of the set, and return the rest in canonical order.
/// A scope set shared between the caches that computed it and every request holding it:
/// a client's ~1,000 expanded scopes are never copied per request.
pub type ScopeSet = std::sync::Arc<Vec<String>>;

pub fn normalize(mut scopes: Vec<String>) -> Vec<String> {
    scopes.sort_by(|a, b| scope_compare(a, b));
    scopes.dedup();
    // In canonical order, every scope covered by a star scope `p*` follows it
    // directly (everything starting with `p` forms one run after `p*`), so one
    // sweep that remembers the last kept star prefix is enough.
    let mut out: Vec<String> = Vec::with_capacity(scopes.len());
    let mut star_prefix: Option<String> = None;
    for scope in scopes {
        if let Some(prefix) = &star_prefix {
            if scope.starts_with(prefix.as_str()) {
                continue;
            }
        }
        star_prefix = scope.strip_suffix('*').map(str::to_owned);
        out.push(scope);
    }
    out
}

/// A scope expression: a scope, `{"AllOf": [..]}` or `{"AnyOf": [..]}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ScopeExpr {
    Scope(String),
    AllOf {
        #[serde(rename = "AllOf")]
        all_of: Vec<ScopeExpr>,
    },
    AnyOf {
        #[serde(rename = "AnyOf")]
        any_of: Vec<ScopeExpr>,
    },
}

impl ScopeExpr {
    pub fn scope(s: impl Into<String>) -> Self {
        ScopeExpr::Scope(s.into())
    }

    pub fn all(v: Vec<ScopeExpr>) -> Self {
        ScopeExpr::AllOf { all_of: v }
    }

    pub fn any(v: Vec<ScopeExpr>) -> Self {
        ScopeExpr::AnyOf { any_of: v }
    }

    /// `AllOf` of plain scopes, the common form of a required scope list.
    pub fn all_of_scopes<S: AsRef<str>>(scopes: &[S]) -> Self {
        Self::all(scopes.iter().map(|s| Self::scope(s.as_ref())).collect())
    }

    /// The expression's scopes, in order.
    fn leaves<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            ScopeExpr::Scope(s) => out.push(s),
            ScopeExpr::AllOf { all_of: v } | ScopeExpr::AnyOf { any_of: v } => {
                v.iter().for_each(|e| e.leaves(out))
            }
        }
    }

    fn leaf_count(&self) -> usize {
        match self {
            ScopeExpr::Scope(_) => 1,
            ScopeExpr::AllOf { all_of: v } | ScopeExpr::AnyOf { any_of: v } => {
                v.iter().map(ScopeExpr::leaf_count).sum()
            }
        }
    }

    /// Which of the expression's scopes `held` satisfies, as a test for each: past
    /// `PAIRWISE_MAX` pairs decided for all of them at once (`covered`).
    fn coverage<'a>(&'a self, held: &'a [String]) -> impl Fn(&str) -> bool + 'a {
        let set: Option<std::collections::HashSet<&str>> =
            (self.leaf_count().saturating_mul(held.len()) > PAIRWISE_MAX).then(|| {
                let mut leaves = Vec::new();
                self.leaves(&mut leaves);
                let hits = covered(held, &leaves);
                leaves
                    .into_iter()
                    .zip(hits)
                    .filter(|(_, hit)| *hit)
                    .map(|(l, _)| l)
                    .collect()
            });
        move |scope: &str| match &set {
            Some(set) => set.contains(scope),
            None => any_satisfies(held, scope),
        }
    }

    /// Whether `held` satisfies the expression. An empty `AllOf` is
    /// satisfied; an empty `AnyOf` is not.
    pub fn satisfied_by(&self, held: &[String]) -> bool {
        self.satisfied_with(&self.coverage(held))
    }

    fn satisfied_with(&self, has: &impl Fn(&str) -> bool) -> bool {
        match self {
            ScopeExpr::Scope(s) => has(s),
            ScopeExpr::AllOf { all_of } => all_of.iter().all(|e| e.satisfied_with(has)),
            ScopeExpr::AnyOf { any_of } => any_of.iter().any(|e| e.satisfied_with(has)),
        }
    }

    /// The unsatisfied remainder (`removeGivenScopes`): satisfied scopes drop
    /// out of an `AllOf`, an `AnyOf` with a satisfied member drops entirely,
    /// single-member lists collapse to their member. `None` when satisfied.
    pub fn unsatisfied(&self, held: &[String]) -> Option<ScopeExpr> {
        self.unsatisfied_with(&self.coverage(held))
    }

    fn unsatisfied_with(&self, has: &impl Fn(&str) -> bool) -> Option<ScopeExpr> {
        match self {
            ScopeExpr::Scope(s) => (!has(s)).then(|| self.clone()),
            ScopeExpr::AllOf { all_of } => {
                let mut rest: Vec<ScopeExpr> = all_of
                    .iter()
                    .filter_map(|e| e.unsatisfied_with(has))
                    .collect();
                match rest.len() {
                    0 => None,
                    1 => rest.pop(),
                    _ => Some(ScopeExpr::all(rest)),
                }
            }
            ScopeExpr::AnyOf { any_of } => {
                let rest: Option<Vec<ScopeExpr>> = any_of
                    .iter()
                    .map(|e| e.unsatisfied_with(has))
                    .collect::<Option<_>>();
                // `rest` is None as soon as one member is satisfied.
                let mut rest = rest?;
                if rest.len() == 1 {
                    rest.pop()
                } else {
                    Some(ScopeExpr::any(rest))
                }
            }
        }
    }

    /// The expression as JSON with 2-space indentation.
    pub fn to_pretty_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a scope expression always serializes")
    }

    /// How Taskcluster renders an expression inside an error message: a bare
    /// scope as its text, anything else as indented JSON. A rendering longer than
    /// `RENDER_MAX` bytes is cut there with a note: a caller's list of ids makes an
    /// expression of one scope per id, and its 10 MB body would otherwise come
    /// back as an error message of hundreds of megabytes.
    fn render(&self) -> String {
        let mut out = Bounded(Vec::new());
        let whole = match self {
            ScopeExpr::Scope(s) => std::io::Write::write_all(&mut out, s.as_bytes()).is_ok(),
            ScopeExpr::AllOf { .. } | ScopeExpr::AnyOf { .. } => {
                serde_json::to_writer_pretty(&mut out, self).is_ok()
            }
        };
        let bytes = out.0;
        // the cut may fall inside a character: keep what is valid
        let valid = match std::str::from_utf8(&bytes) {
            Ok(text) => text,
            Err(e) => std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default(),
        };
        if whole {
            valid.to_owned()
        } else {
            format!("{valid}\n... (cut: the expression is longer than {RENDER_MAX} bytes)")
        }
    }
}

/// The most bytes of one scope expression an error message shows.
const RENDER_MAX: usize = 64 * 1024;

/// A writer that takes `RENDER_MAX` bytes and then fails, which stops the serializer.
struct Bounded(Vec<u8>);

impl std::io::Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let room = RENDER_MAX - self.0.len();
        if buf.len() > room {
            self.0.extend_from_slice(&buf[..room]);
            return Err(std::io::Error::other("the rendering is cut here"));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The message of a 403 `InsufficientScopes` (auth.md §5.4). With a client id,
/// it lists the unsatisfied remainder and then the required expression;
/// without credentials only the required expression.
pub fn insufficient_scopes_message(
    client_id: Option<&str>,
    expr: &ScopeExpr,
    held: &[String],
) -> String {
    let required = expr.render();
    match client_id {
        Some(id) => {
            // Taskcluster renders a satisfied remainder (JS null) as `null`.
            let missing = expr
                .unsatisfied(held)
                .map_or_else(|| "null".to_owned(), |e| e.render());
            format!(
                "Client ID {id} does not have sufficient scopes and is missing the following scopes:\n\
                 \n```\n{missing}\n```\n\n\
                 This request requires the client to satisfy the following scope expression:\n\
                 \n```\n{required}\n```"
            )
        }
        None => format!(
            "This request requires Taskcluster credentials that satisfy the following scope expression:\n\
             \n```\n{required}\n```"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(scopes: &[&str]) -> Vec<String> {
        scopes.iter().map(ToString::to_string).collect()
    }

    fn s(x: &str) -> ScopeExpr {
        ScopeExpr::scope(x)
    }

    /// Evaluates an expression (JSON wire form) against held scopes and checks
    /// both the verdict and the unsatisfied remainder (JSON, or `null`).
    fn check(expr_json: &str, held: &[&str], satisfied: bool, remainder_json: &str) {
        let expr: ScopeExpr = serde_json::from_str(expr_json).expect("expression parses");
        let held = v(held);
        assert_eq!(
            expr.satisfied_by(&held),
            satisfied,
            "verdict for {expr_json}"
        );
        let remainder = match expr.unsatisfied(&held) {
            Some(e) => serde_json::to_value(&e).unwrap(),
            None => serde_json::Value::Null,
        };
        let want: serde_json::Value = serde_json::from_str(remainder_json).unwrap();
        assert_eq!(remainder, want, "remainder for {expr_json}");
        assert_eq!(
            remainder.is_null(),
            satisfied,
            "remainder agrees with verdict"
        );
    }

    #[test]
    fn valid_scopes() {
        assert!(is_valid_scope(""));
        assert!(is_valid_scope("queue:create-task:highest:proj-x/*"));
        assert!(is_valid_scope(" ~"));
        assert!(!is_valid_scope("a\nb"));
        assert!(!is_valid_scope("tab\t"));
        assert!(!is_valid_scope("é"));
        assert!(!is_valid_scope("\x7f"));
    }

    #[test]
    fn satisfaction_rules() {
        assert!(satisfies("a", "a"));
        assert!(!satisfies("a", "ab"));
        assert!(satisfies("*", "anything"));
        assert!(satisfies("*", ""));
        assert!(satisfies("a*", "a"));
        assert!(satisfies("a*", "ab"));
        assert!(satisfies("a*", "a*"));
        assert!(!satisfies("a*", "b"));
        assert!(!satisfies("ab*", "a*"));
        // Only a trailing star is special.
        assert!(!satisfies("a*b", "axb"));
        assert!(satisfies("a*b", "a*b"));
        assert!(!satisfies("", "a"));
        assert!(any_satisfies(&v(&["x", "queue:*"]), "queue:get-task:abc"));
        assert!(!any_satisfies(&[], "x"));
    }

    #[test]
    fn canonical_order() {
        let mut scopes = v(&["b", "aa", "a(", "a", "a*", "", "*"]);
        scopes.sort_by(|a, b| scope_compare(a, b));
        assert_eq!(scopes, v(&["*", "", "a*", "a", "a(", "aa", "b"]));
        assert_eq!(scope_compare("x", "x"), Ordering::Equal);
        assert_eq!(scope_compare("x*", "x*"), Ordering::Equal);
    }

    #[test]
    fn normalize_sets() {
        assert_eq!(normalize(vec![]), Vec::<String>::new());
        assert_eq!(normalize(v(&["b", "a", "b", "a"])), v(&["a", "b"]));
        assert_eq!(
            normalize(v(&["a:b", "a:*", "a:c*", "a:", "b", "a*x"])),
            v(&["a*x", "a:*", "b"])
        );
        assert_eq!(normalize(v(&["x", "*", "y*"])), v(&["*"]));
        assert_eq!(
            normalize(v(&["assume:anonymous", "", "a*"])),
            v(&["", "a*"])
        );
        assert_eq!(
            normalize(v(&["ab*", "a", "ab", "ac"])),
            v(&["a", "ab*", "ac"])
        );
    }

    #[test]
    fn expressions() {
        check(r#""a""#, &["a"], true, "null");
        check(r#""a""#, &["b"], false, r#""a""#);
        check(r#"{"AllOf": []}"#, &[], true, "null");
        check(r#"{"AnyOf": []}"#, &["*"], false, r#"{"AnyOf": []}"#);
        check(r#"{"AllOf": ["a", "b"]}"#, &["a"], false, r#""b""#);
        check(
            r#"{"AllOf": ["a", "b", "c"]}"#,
            &["a"],
            false,
            r#"{"AllOf": ["b", "c"]}"#,
        );
        check(r#"{"AllOf": ["a", "b"]}"#, &["*"], true, "null");
        check(r#"{"AnyOf": ["a", "b"]}"#, &["b"], true, "null");
        check(
            r#"{"AnyOf": ["a", "b"]}"#,
            &[],
            false,
            r#"{"AnyOf": ["a", "b"]}"#,
        );
        check(r#"{"AnyOf": ["a"]}"#, &[], false, r#""a""#);
        check(
            r#"{"AllOf": ["x:1", {"AnyOf": ["y:1", {"AllOf": ["z:1", "x:2"]}]}]}"#,
            &["x:*"],
            false,
            r#"{"AnyOf": ["y:1", "z:1"]}"#,
        );
        check(
            r#"{"AnyOf": [{"AllOf": ["a", "b"]}, {"AllOf": ["c", "d"]}]}"#,
            &["a", "c"],
            false,
            r#"{"AnyOf": ["b", "d"]}"#,
        );
        check(
            r#"{"AnyOf": [{"AllOf": ["a", "b"]}, "c"]}"#,
            &["a", "b"],
            true,
            "null",
        );
    }

    #[test]
    fn wire_shape_round_trip() {
        let expr = ScopeExpr::all(vec![
            s("queue:create-task:*"),
            ScopeExpr::any(vec![s("a"), ScopeExpr::all(vec![])]),
        ]);
        let json = serde_json::to_string(&expr).unwrap();
        assert_eq!(
            json,
            r#"{"AllOf":["queue:create-task:*",{"AnyOf":["a",{"AllOf":[]}]}]}"#
        );
        assert_eq!(serde_json::from_str::<ScopeExpr>(&json).unwrap(), expr);
        assert_eq!(serde_json::from_str::<ScopeExpr>(r#""x""#).unwrap(), s("x"));
        assert!(serde_json::from_str::<ScopeExpr>("5").is_err());
        assert!(serde_json::from_str::<ScopeExpr>(r#"{"OneOf": ["a"]}"#).is_err());
        assert_eq!(
            ScopeExpr::all_of_scopes(&["a", "b"]),
            ScopeExpr::all(vec![s("a"), s("b")])
        );
        assert_eq!(
            ScopeExpr::any(vec![s("a")]).to_pretty_json(),
            "{\n  \"AnyOf\": [\n    \"a\"\n  ]\n}"
        );
    }

    #[test]
    fn insufficient_scopes_text() {
        let expr = ScopeExpr::all(vec![s("queue:create-task:x"), s("queue:route:y")]);
        let held = v(&["queue:route:*"]);
        assert_eq!(
            insufficient_scopes_message(Some("me"), &expr, &held),
            "Client ID me does not have sufficient scopes and is missing the following scopes:\n\
             \n```\nqueue:create-task:x\n```\n\n\
             This request requires the client to satisfy the following scope expression:\n\
             \n```\n{\n  \"AllOf\": [\n    \"queue:create-task:x\",\n    \"queue:route:y\"\n  ]\n}\n```"
        );
        assert_eq!(
            insufficient_scopes_message(None, &s("auth:current-scopes"), &[]),
            "This request requires Taskcluster credentials that satisfy the following scope expression:\n\
             \n```\nauth:current-scopes\n```"
        );
    }

    /// One scope per id of a long list: the message shows the start of each expression,
    /// cut at 64 KB on a character boundary, and says so.
    #[test]
    fn long_expressions_are_cut_in_messages() {
        let expr = ScopeExpr::all(
            (0..200_000)
                .map(|i| s(&format!("queue:status:é{i:08}")))
                .collect(),
        );
        let message = insufficient_scopes_message(Some("me"), &expr, &[]);
        assert!(message.len() < 3 * RENDER_MAX, "{} bytes", message.len());
        assert_eq!(
            message
                .matches("... (cut: the expression is longer than")
                .count(),
            2
        );
        assert!(message.contains("queue:status:é00000000"));
        assert!(!message.contains("queue:status:é00199999"));
        let short = ScopeExpr::all(vec![s("a"), s("b")]);
        assert!(!insufficient_scopes_message(None, &short, &[]).contains("cut"));
    }

    proptest::proptest! {
        /// The sorted sweep answers what asking every held scope answers, on scopes drawn
        /// from a small alphabet so that prefixes, stars and equal scopes meet often.
        #[test]
        fn the_sweep_agrees_with_pairwise_checks(
            held in proptest::collection::vec("[ab:]{0,4}\\*?", 0..12),
            required in proptest::collection::vec("[ab:*]{0,5}", 0..12),
        ) {
            let pairwise: Vec<bool> = required.iter().map(|r| any_satisfies(&held, r)).collect();
            proptest::prop_assert_eq!(sweep(&held, &required), pairwise);
        }
    }

    /// Lists as long as a 10 MB body holds, on both sides: answered by the sweep (pairwise,
    /// 400,000 × 300,000 checks would take minutes), with the right answers.
    #[test]
    fn long_lists_on_both_sides_are_checked_in_one_sweep() {
        let mut held: Vec<String> = (0..300_000).map(|i| format!("a{i:07}")).collect();
        held.push("b:*".into());
        let mut required: Vec<String> = (0..400_000).map(|i| format!("b:{i}")).collect();
        required.push("a0299999".into());
        assert!(covers_all(&held, &required));
        required.push("a0300000".into());
        let expr = ScopeExpr::all_of_scopes(&required);
        assert!(!expr.satisfied_by(&held));
        assert_eq!(expr.unsatisfied(&held), Some(s("a0300000")));
    }
}
