//! Roles and scope expansion (auth.md §7): which roles a scope assumes, parameterized roles,
//! the expansion fixpoint, role validation and dependency-cycle detection.
//!
//! **Invariant:** pure; `RoleSet` is an immutable snapshot. Expansion always terminates: the
//! role set it runs on is acyclic (checked on every change), and a hard cap guards against a
//! role set that came from elsewhere.

use crate::scopes;
use std::collections::{BTreeMap, HashSet};

/// The parameter placeholder of parameterized roles.
pub const PARAM: &str = "<..>";

/// Expansion gives up growing past this many scopes (only reachable with cyclic input).
const MAX_EXPANDED: usize = 100_000;

/// What a role grants when it is assumed.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Param<'a> {
    /// An exact match of a role without a trailing `*`.
    Exact,
    /// The text a starred role's `*` stood for (may be empty, may end in `*`).
    Text(&'a str),
}

/// The text after `assume:` a scope stands for, if it assumes any role: `assume:<t>`, and the
/// star scopes `*`, `a*`, ..., `assume*` that behave like `assume:*`.
pub fn assumed_text(scope: &str) -> Option<&str> {
    if let Some(t) = scope.strip_prefix("assume:") {
        return Some(t);
    }
    match scope.strip_suffix('*') {
        Some(p) if "assume:".starts_with(p) => Some("*"),
        _ => None,
    }
}

/// Whether `assume:<t>` assumes role `role_id`, and with which parameter (auth.md §7.2).
fn matches<'t>(t: &'t str, role_id: &str) -> Option<Param<'t>> {
    let role_prefix = role_id.strip_suffix('*');
    match t.strip_suffix('*') {
        Some(u) => {
            if role_id.starts_with(u) {
                return Some(Param::Text("*"));
            }
            match role_prefix {
                Some(rp) if u.starts_with(rp) => Some(Param::Text(&t[rp.len()..])),
                _ => None,
            }
        }
        None => {
            if role_id == t {
                return Some(Param::Exact);
            }
            match role_prefix {
                Some(rp) if t.starts_with(rp) => Some(Param::Text(&t[rp.len()..])),
                _ => None,
            }
        }
    }
}

/// A role scope with `<..>` replaced by `p`; a `p` ending in `*` also swallows the rest.
fn substitute(scope: &str, p: &str) -> String {
    match scope.find(PARAM) {
        None => scope.to_string(),
        Some(i) if p.ends_with('*') => format!("{}{}", &scope[..i], p),
        Some(i) => format!("{}{}{}", &scope[..i], p, &scope[i + PARAM.len()..]),
    }
}

/// Why a role definition is refused (400 InputError); the text is Taskcluster's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RoleError(pub String);

/// Checks the scopes of one role on their own: valid, no `**`, `<..>` rules (auth.md §7.3).
pub fn validate_role_scopes(role_id: &str, scopes_: &[String]) -> Result<(), RoleError> {
    for s in scopes_ {
        if !scopes::is_valid_scope(s) {
            return Err(RoleError(format!("scope `{s}` is not a valid scope")));
        }
        if s.ends_with("**") {
            return Err(RoleError("scopes must not end with `**`".to_string()));
        }
        // only a starred role is parameterized: elsewhere `<..>` is literal text (§7.2)
        if !role_id.ends_with('*') {
            continue;
        }
        if s.matches(PARAM).count() > 1 {
            return Err(RoleError(format!(
                "parameterized scope '{s}' contains multiple '<..>'"
            )));
        }
        if s.ends_with("*<..>") {
            return Err(RoleError(format!(
                "parameterized scope '{s}' ends with '*<..>' which implies an ambiguous kleene"
            )));
        }
    }
    Ok(())
}

/// An immutable set of roles, ready to expand scope sets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoleSet {
    roles: BTreeMap<String, Vec<String>>,
}

impl RoleSet {
    pub fn new(roles: impl IntoIterator<Item = (String, Vec<String>)>) -> RoleSet {
        RoleSet {
            roles: roles.into_iter().collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.roles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.roles.is_empty()
    }

    /// The scopes `scope` grants directly (one level, parameters substituted).
    fn grants<'a>(&'a self, scope: &'a str) -> impl Iterator<Item = String> + 'a {
        let t = assumed_text(scope);
        self.roles.iter().flat_map(move |(role_id, role_scopes)| {
            let param = t.and_then(|t| matches(t, role_id));
            let starred = role_id.ends_with('*');
            role_scopes.iter().filter_map(move |s| match &param {
                None => None,
                Some(Param::Text(p)) if starred => Some(substitute(s, p)),
                Some(_) => Some(s.clone()),
            })
        })
    }

    /// The expansion of `input` (auth.md §7.2): the input plus everything the assumed roles
    /// grant, transitively, normalized.
    pub fn expand<S: AsRef<str>>(&self, input: &[S]) -> Vec<String> {
        let mut seen: HashSet<String> = HashSet::new();
        let mut work: Vec<String> = Vec::new();
        for s in input {
            if seen.insert(s.as_ref().to_string()) {
                work.push(s.as_ref().to_string());
            }
        }
        if !self.roles.is_empty() {
            while let Some(scope) = work.pop() {
                if assumed_text(&scope).is_none() {
                    continue;
                }
                for granted in self.grants(&scope) {
                    if seen.len() >= MAX_EXPANDED {
                        break;
                    }
                    if !seen.contains(&granted) {
                        seen.insert(granted.clone());
                        work.push(granted);
                    }
                }
            }
        }
        scopes::normalize(seen.into_iter().collect())
    }

    /// The role's own expansion: `assume:<roleId>` expanded (role JSON `expandedScopes`).
    pub fn expand_role(&self, role_id: &str) -> Vec<String> {
        self.expand(&[format!("assume:{role_id}")])
    }

    /// The roles that role `role_id`, of `role_scopes`, depends on: those assumed by any of
    /// its scopes, with `<..>` read as `*` when the role is parameterized (auth.md §7.3).
    fn dependencies<'a>(
        &'a self,
        role_id: &str,
        role_scopes: &'a [String],
    ) -> impl Iterator<Item = &'a str> + 'a {
        let parameterized = role_id.ends_with('*');
        role_scopes.iter().flat_map(move |s| {
            let widened = match s.find(PARAM).filter(|_| parameterized) {
                Some(i) => format!("{}*", &s[..i]),
                None => s.clone(),
            };
            self.roles
                .keys()
                .filter(move |r| assumed_text(&widened).and_then(|t| matches(t, r)).is_some())
                .map(String::as_str)
                .collect::<Vec<_>>()
        })
    }

    /// This set with `role_id` set to `scopes_`, or an error naming a dependency cycle
    /// through it. The rest of the set is assumed acyclic already, so any cycle runs through
    /// the changed role.
    pub fn with_role(&self, role_id: &str, scopes_: Vec<String>) -> Result<RoleSet, RoleError> {
        validate_role_scopes(role_id, &scopes_)?;
        let mut next = self.clone();
        next.roles.insert(role_id.to_string(), scopes_);
        if let Some(path) = next.cycle_from(role_id) {
            let rendered: Vec<String> = path.iter().map(|r| format!("'assume:{r}'")).collect();
            return Err(RoleError(format!(
                "Roles may not contain dependency cycles, found: {}",
                rendered.join(" -> ")
            )));
        }
        Ok(next)
    }

    /// This set without `role_id`.
    pub fn without_role(&self, role_id: &str) -> RoleSet {
        let mut next = self.clone();
        next.roles.remove(role_id);
        next
    }

    /// A path of role ids from `start` back to itself, if there is one.
    fn cycle_from(&self, start: &str) -> Option<Vec<String>> {
        // depth-first search with an explicit stack of (role, next dependency index)
        let deps = |r: &str| -> Vec<String> {
            self.roles
                .get(r)
                .map(|s| self.dependencies(r, s).map(str::to_string).collect())
                .unwrap_or_default()
        };
        let mut visited: HashSet<String> = HashSet::new();
        let mut path: Vec<(String, Vec<String>, usize)> = vec![(start.to_string(), deps(start), 0)];
        visited.insert(start.to_string());
        while let Some((_, children, next)) = path.last_mut() {
            if *next >= children.len() {
                path.pop();
                continue;
            }
            let child = children[*next].clone();
            *next += 1;
            if child == start {
                let mut ids: Vec<String> = path.iter().map(|(r, _, _)| r.clone()).collect();
                ids.push(child);
                return Some(ids);
            }
            if visited.insert(child.clone()) {
                let grand = deps(&child);
                path.push((child, grand, 0));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn set(roles: &[(&str, &[&str])]) -> RoleSet {
        RoleSet::new(roles.iter().map(|(r, s)| (r.to_string(), v(s))))
    }

    #[test]
    fn reference_example() {
        let roles = set(&[
            (
                "group:admins",
                &["admin-scope-1", "admin-scope-2", "assume:group:devs"],
            ),
            ("group:devs", &["dev-scope"]),
        ]);
        assert_eq!(
            roles.expand(&["assume:group:admins", "my-scope"]),
            v(&[
                "admin-scope-1",
                "admin-scope-2",
                "assume:group:admins",
                "assume:group:devs",
                "dev-scope",
                "my-scope"
            ])
        );
    }

    #[test]
    fn parameterized_roles() {
        let roles = set(&[("project-admin:*", &["secrets:get:project/<..>/*", "plain"])]);
        assert_eq!(
            roles.expand(&["assume:project-admin:zap"]),
            v(&[
                "assume:project-admin:zap",
                "plain",
                "secrets:get:project/zap/*"
            ])
        );
        // a parameter ending in `*` swallows the rest of the scope
        assert_eq!(
            roles.expand(&["assume:project-admin:ops*"]),
            v(&[
                "assume:project-admin:ops*",
                "plain",
                "secrets:get:project/ops*"
            ])
        );
        // `assume:project*` is "under" the starred role: parameter `*`
        assert_eq!(
            roles.expand(&["assume:project*"]),
            v(&["assume:project*", "plain", "secrets:get:project/*"])
        );
        // an empty parameter
        assert_eq!(
            roles.expand(&["assume:project-admin:"]),
            v(&["assume:project-admin:", "plain", "secrets:get:project//*"])
        );
    }

    #[test]
    fn star_scopes_assume_everything() {
        let roles = set(&[("a", &["x"]), ("b", &["y"])]);
        for s in ["*", "a*", "assume*", "assume:*", "assu*"] {
            let e = roles.expand(&[s]);
            assert!(
                scopes::any_satisfies(&e, "x") && scopes::any_satisfies(&e, "y"),
                "{s}: {e:?}"
            );
        }
        assert_eq!(roles.expand(&["b*"]), v(&["b*"]));
        // `<..>` is literal text in a role without a trailing `*`
        let lit = set(&[("lit", &["a/<..>/b"])]);
        assert_eq!(lit.expand(&["assume:lit"]), v(&["a/<..>/b", "assume:lit"]));
    }

    #[test]
    fn cycles_are_refused() {
        let empty = RoleSet::default();
        for (role, scope) in [
            ("x", "*"),
            ("x", "assume:*"),
            ("x", "assume:x"),
            ("a*", "assume:a<..>x"),
            ("ab*", "assume:abc"),
            ("abc", "assume:ab*"),
        ] {
            let err = empty.with_role(role, v(&[scope])).unwrap_err();
            assert!(
                err.0.starts_with("Roles may not contain dependency cycles"),
                "{err}"
            );
        }
        let r = empty.with_role("p:*", v(&["assume:q:<..>"])).unwrap();
        let err = r.with_role("q:x", v(&["assume:p:y"])).unwrap_err();
        assert_eq!(
            err.0,
            "Roles may not contain dependency cycles, found: 'assume:q:x' -> 'assume:p:*' -> 'assume:q:x'"
        );
        // a chain without a loop is fine
        let r = empty
            .with_role("a", v(&["assume:b"]))
            .unwrap()
            .with_role("b", v(&["assume:c", "s"]))
            .unwrap();
        assert_eq!(
            r.expand_role("a"),
            v(&["assume:a", "assume:b", "assume:c", "s"])
        );
    }

    #[test]
    fn role_scope_validation() {
        let empty = RoleSet::default();
        assert!(empty
            .with_role("p*", v(&["a<..>b<..>"]))
            .unwrap_err()
            .0
            .contains("multiple"));
        assert!(empty
            .with_role("p*", v(&["a*<..>"]))
            .unwrap_err()
            .0
            .contains("kleene"));
        assert!(empty
            .with_role("p", v(&["a**"]))
            .unwrap_err()
            .0
            .contains("**"));
        assert!(empty.with_role("p", v(&["a\u{7f}"])).is_err());
        // upstream's texts
        assert_eq!(
            empty.with_role("p*", v(&["a*<..>"])).unwrap_err().0,
            "parameterized scope 'a*<..>' ends with '*<..>' which implies an ambiguous kleene"
        );
        // in a role without a trailing `*`, `<..>` is literal text: none of those rules
        // apply, and it widens nothing when looking for cycles
        let literal = empty
            .with_role("p", v(&["a<..>b<..>", "a*<..>", "assume:p<..>x"]))
            .unwrap();
        assert_eq!(
            literal.expand_role("p"),
            v(&["a*<..>", "a<..>b<..>", "assume:p", "assume:p<..>x"])
        );
    }

    // --- property tests against a reference model --------------------------------------

    /// The reference model: a naive fixpoint over plain (unparameterized) roles, checked with
    /// plain satisfaction instead of the assume-table.
    fn model_expand(roles: &BTreeMap<String, Vec<String>>, input: &[String]) -> HashSet<String> {
        let mut out: HashSet<String> = input.iter().cloned().collect();
        loop {
            let mut added = false;
            for (r, rs) in roles {
                let assume = format!("assume:{r}");
                if out.iter().any(|g| scopes::satisfies(g, &assume)) {
                    for s in rs {
                        added |= out.insert(s.clone());
                    }
                }
            }
            if !added {
                return out;
            }
        }
    }

    fn role_id() -> impl Strategy<Value = String> {
        "[abc]{1,3}"
    }

    fn scope() -> impl Strategy<Value = String> {
        prop_oneof![
            "[xyz]{1,2}\\*?",
            role_id().prop_map(|r| format!("assume:{r}")),
            role_id().prop_map(|r| format!("assume:{r}*")),
        ]
    }

    /// Plain (non-starred) acyclic role sets: each role may only assume roles named later
    /// in sort order, so there is never a cycle.
    fn acyclic_roles() -> impl Strategy<Value = BTreeMap<String, Vec<String>>> {
        prop::collection::btree_map(role_id(), prop::collection::vec(scope(), 0..4), 0..6).prop_map(
            |m| {
                let ids: Vec<String> = m.keys().cloned().collect();
                m.into_iter()
                    .map(|(r, scopes_)| {
                        let kept = scopes_
                            .into_iter()
                            .filter(|s| {
                                assumed_text(s).is_none_or(|_| {
                                    ids.iter().all(|other| {
                                        other > &r
                                            || !scopes::satisfies(s, &format!("assume:{other}"))
                                    })
                                })
                            })
                            .collect();
                        (r, kept)
                    })
                    .collect()
            },
        )
    }

    proptest! {
        #[test]
        fn expansion_matches_the_model(
            roles in acyclic_roles(),
            input in prop::collection::vec(scope(), 0..4),
        ) {
            let set = RoleSet::new(roles.clone());
            let got = set.expand(&input);
            let model: Vec<String> = model_expand(&roles, &input).into_iter().collect();
            prop_assert_eq!(&got, &scopes::normalize(model));
        }

        #[test]
        fn expansion_is_idempotent_monotone_and_grants_everything(
            roles in acyclic_roles(),
            input in prop::collection::vec(scope(), 0..4),
            extra in scope(),
        ) {
            let set = RoleSet::new(roles.clone());
            let once = set.expand(&input);
            prop_assert_eq!(&set.expand(&once), &once);
            // monotone: more input never loses a scope
            let mut bigger = input.clone();
            bigger.push(extra);
            let more = set.expand(&bigger);
            for s in &once {
                prop_assert!(scopes::any_satisfies(&more, s));
            }
            // every input scope and every scope of every assumed role is satisfied
            for s in &input {
                prop_assert!(scopes::any_satisfies(&once, s));
            }
            for (r, rs) in &roles {
                if scopes::any_satisfies(&once, &format!("assume:{r}")) {
                    for s in rs {
                        prop_assert!(scopes::any_satisfies(&once, s), "{} from {}", s, r);
                    }
                }
            }
        }
    }
}
