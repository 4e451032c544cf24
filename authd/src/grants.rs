//! Who may do what: user names, grant subjects and patterns, action sets,
//! and the computation of a token's `access` claim as the intersection of
//! what was requested with what is granted.
//!
//! A grant is (subject, target, actions). The subject is a user name,
//! `anonymous` (requests without credentials, and every signed-in user too)
//! or `*` (any signed-in user). The target is a repository glob — `*`
//! matches any run of characters including `/`, and `${user}` stands for
//! the signed-in user's name — or the catalog, `registry:catalog`. Admins
//! hold everything, including `authd:admin:*`, which no grant can give.

use std::fmt;

use serde::Serialize;
use token::{Action, ResourceActions, Scope};

use crate::error::Error;

/// Subject of grants that apply to requests without credentials.
pub const ANONYMOUS: &str = "anonymous";
/// Subject of grants that apply to every signed-in user.
pub const EVERYONE: &str = "*";
/// Placeholder for the signed-in user's name in a pattern.
pub const USER_PLACEHOLDER: &str = "${user}";
/// Longest user name.
pub const MAX_USER_NAME_LEN: usize = 64;
/// Longest scope list honoured in one token request.
pub const MAX_SCOPES: usize = 64;

/// User names: 1–64 bytes forming one repository path component
/// (`[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`, lowercase), so that `${user}/*`
/// names repositories for every user and `Admin` cannot shadow `admin`;
/// and not one of the reserved subjects. Anything else (upper case, `@`,
/// quotes, spaces, `:` which htpasswd cannot hold, unicode) is refused with
/// a clear error instead of being stored.
pub fn is_valid_user_name(name: &str) -> bool {
    name.len() <= MAX_USER_NAME_LEN
        && name != ANONYMOUS
        && !name.contains('/')
        && token::name::is_valid_repository(name)
}

pub fn check_user_name(name: &str) -> Result<(), Error> {
    if is_valid_user_name(name) {
        Ok(())
    } else {
        Err(Error::bad_request(
            "invalid_name",
            format!(
                "invalid user name {name:?}: use 1 to {MAX_USER_NAME_LEN} of a-z 0-9 and the \
                 separators . _ __ - between them (a repository path component), and not \
                 \"{ANONYMOUS}\""
            ),
        ))
    }
}

/// A set of registry actions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ActionSet(u8);

impl ActionSet {
    pub const EMPTY: ActionSet = ActionSet(0);
    pub const ALL: ActionSet = ActionSet(0b111);
    const ORDER: [(Action, u8); 3] = [(Action::Pull, 1), (Action::Push, 2), (Action::Delete, 4)];

    pub fn of(action: Action) -> ActionSet {
        match action {
            Action::Pull => ActionSet(1),
            Action::Push => ActionSet(2),
            Action::Delete => ActionSet(4),
            Action::All => ActionSet::ALL,
        }
    }

    /// Parses action names; unknown names are an error.
    pub fn parse<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<ActionSet, String> {
        names.into_iter().try_fold(ActionSet::EMPTY, |set, name| {
            Action::parse(name.trim())
                .map(|a| set | ActionSet::of(a))
                .ok_or_else(|| format!("unknown action {name:?} (use pull, push, delete or *)"))
        })
    }

    pub fn contains(self, other: ActionSet) -> bool {
        self.0 & other.0 == other.0
    }

    /// The actions as listed in grants and tokens: `["*"]` for all of them.
    pub fn names(self) -> Vec<&'static str> {
        if self == ActionSet::ALL {
            return vec!["*"];
        }
        ActionSet::ORDER
            .iter()
            .filter(|(_, bit)| self.0 & bit != 0)
            .map(|(a, _)| a.as_str())
            .collect()
    }

    /// The concrete actions, without `*`.
    pub fn actions(self) -> Vec<Action> {
        ActionSet::ORDER
            .iter()
            .filter(|(_, bit)| self.0 & bit != 0)
            .map(|(a, _)| *a)
            .collect()
    }
}

impl std::ops::BitOr for ActionSet {
    type Output = ActionSet;
    fn bitor(self, rhs: ActionSet) -> ActionSet {
        ActionSet(self.0 | rhs.0)
    }
}

impl std::ops::BitAnd for ActionSet {
    type Output = ActionSet;
    fn bitand(self, rhs: ActionSet) -> ActionSet {
        ActionSet(self.0 & rhs.0)
    }
}

impl fmt::Display for ActionSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.names().join(","))
    }
}

/// What a grant applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Repositories whose name matches the glob.
    Repository(String),
    /// `registry:catalog:*`: listing every repository.
    Catalog,
}

impl Target {
    /// Stored form: (resource type, pattern).
    pub fn parts(&self) -> (&str, &str) {
        match self {
            Target::Repository(p) => ("repository", p),
            Target::Catalog => (token::CATALOG_TYPE, token::CATALOG_NAME),
        }
    }

    /// Reads a target from its API/CLI form: a repository glob, or
    /// `registry:catalog` (optionally with `:*`). `resource_type`, when
    /// given, must agree.
    pub fn parse(resource_type: Option<&str>, pattern: &str) -> Result<Target, Error> {
        let catalog = format!("{}:{}", token::CATALOG_TYPE, token::CATALOG_NAME);
        let is_catalog_text = pattern == catalog || pattern == format!("{catalog}:*");
        match resource_type {
            None | Some("repository") if !is_catalog_text => {
                check_pattern(pattern)?;
                Ok(Target::Repository(pattern.to_owned()))
            }
            None => Ok(Target::Catalog),
            Some(t)
                if t == token::CATALOG_TYPE
                    && (pattern == token::CATALOG_NAME || is_catalog_text) =>
            {
                Ok(Target::Catalog)
            }
            Some(t) => Err(Error::bad_request(
                "invalid_pattern",
                format!(
                    "unsupported grant target {t}:{pattern} (use type \"repository\" with a name \
                     pattern, or \"registry\" with \"catalog\")"
                ),
            )),
        }
    }

    /// Reads a target from its stored form.
    pub fn from_parts(resource_type: &str, pattern: &str) -> Target {
        if resource_type == token::CATALOG_TYPE {
            Target::Catalog
        } else {
            Target::Repository(pattern.to_owned())
        }
    }
}

/// Repository patterns: repository-name characters, `*`, and `${user}`.
fn check_pattern(pattern: &str) -> Result<(), Error> {
    let plain = pattern.replace(USER_PLACEHOLDER, "u");
    let ok = !pattern.is_empty()
        && pattern.len() <= token::name::MAX_REPOSITORY_LEN
        && plain
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/*".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::bad_request(
            "invalid_pattern",
            format!(
                "invalid repository pattern {pattern:?}: use lowercase repository name \
                 characters (a-z 0-9 . _ - /), * and {USER_PLACEHOLDER}"
            ),
        ))
    }
}

/// Checks a grant subject: a valid user name, `anonymous` or `*`.
pub fn check_subject(subject: &str) -> Result<(), Error> {
    if subject == ANONYMOUS || subject == EVERYONE || is_valid_user_name(subject) {
        Ok(())
    } else {
        Err(Error::bad_request(
            "invalid_subject",
            format!(
                "invalid subject {subject:?}: use a user name, \"{ANONYMOUS}\" or \"{EVERYONE}\""
            ),
        ))
    }
}

/// One stored grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub id: i64,
    pub subject: String,
    pub target: Target,
    pub actions: ActionSet,
    pub created_at: i64,
}

/// The API form of a grant.
#[derive(Debug, Serialize)]
pub struct GrantView {
    pub id: i64,
    pub subject: String,
    #[serde(rename = "type")]
    pub resource_type: String,
    pub pattern: String,
    pub actions: Vec<&'static str>,
    pub created_at: String,
}

impl From<&Grant> for GrantView {
    fn from(g: &Grant) -> GrantView {
        let (t, p) = g.target.parts();
        GrantView {
            id: g.id,
            subject: g.subject.clone(),
            resource_type: t.to_owned(),
            pattern: p.to_owned(),
            actions: g.actions.names(),
            created_at: crate::util::rfc3339(g.created_at),
        }
    }
}

/// A grant pattern with `${user}` replaced by the signed-in user's name;
/// `None` when it names the user and there is none (anonymous).
pub fn expand_pattern(pattern: &str, user: Option<&str>) -> Option<String> {
    if pattern.contains(USER_PLACEHOLDER) {
        user.map(|u| pattern.replace(USER_PLACEHOLDER, u))
    } else {
        Some(pattern.to_owned())
    }
}

/// Glob match (the registry's, from the token crate: `*` matches any run of
/// characters including `/`), after `${user}` expansion.
pub fn pattern_matches(pattern: &str, user: Option<&str>, name: &str) -> bool {
    expand_pattern(pattern, user).is_some_and(|p| token::name::glob_matches(&p, name))
}

/// The `repository-pattern` entries of a token issued for a catalog request
/// the principal may not fully hold: the patterns of its grants that include
/// `pull`, so the registry lists exactly the repositories it may pull.
fn catalog_patterns(principal: Principal<'_>, grants: &[Grant]) -> Vec<ResourceActions> {
    let mut patterns: Vec<String> = grants
        .iter()
        .filter(|g| {
            principal.is_subject(&g.subject) && g.actions.contains(ActionSet::of(Action::Pull))
        })
        .filter_map(|g| match &g.target {
            Target::Repository(p) => expand_pattern(p, principal.name()),
            Target::Catalog => None,
        })
        .collect();
    patterns.sort();
    patterns.dedup();
    patterns
        .into_iter()
        .map(|p| ResourceActions::new(token::REPOSITORY_PATTERN_TYPE, &p, &[Action::Pull]))
        .collect()
}

/// How long grants read from the database are reused. Changes made through
/// this process's API apply at once; changes made by the CLI or another
/// replica within this time — short next to a token's lifetime, which
/// already outlives any revocation.
pub const CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(2);

/// The grants that apply to a principal, cached for [`CACHE_TTL`]: the
/// grant lookup is the most frequent query of the token endpoint.
pub struct GrantCache {
    cache: moka::sync::Cache<Option<String>, std::sync::Arc<Vec<Grant>>>,
}

impl std::fmt::Debug for GrantCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrantCache").finish_non_exhaustive()
    }
}

impl Default for GrantCache {
    fn default() -> GrantCache {
        GrantCache {
            cache: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(CACHE_TTL)
                .build(),
        }
    }
}

impl GrantCache {
    /// The grants of `user` (with `*` and `anonymous`), or of anonymous
    /// requests when `None`.
    pub async fn for_principal(
        &self,
        db: &crate::db::Db,
        user: Option<&str>,
    ) -> Result<std::sync::Arc<Vec<Grant>>, Error> {
        let key = user.map(str::to_owned);
        if let Some(hit) = self.cache.get(&key) {
            return Ok(hit);
        }
        let grants = std::sync::Arc::new(crate::db::grants::for_principal(db, user).await?);
        self.cache.insert(key, grants.clone());
        Ok(grants)
    }

    /// Forgets everything; called after any change to grants or users.
    pub fn invalidate(&self) {
        self.cache.invalidate_all();
    }
}

/// Who is asking for a token.
#[derive(Debug, Clone, Copy)]
pub enum Principal<'a> {
    Anonymous,
    User { name: &'a str, admin: bool },
}

impl Principal<'_> {
    pub fn name(&self) -> Option<&str> {
        match self {
            Principal::Anonymous => None,
            Principal::User { name, .. } => Some(name),
        }
    }

    /// Whether a grant's subject covers this principal.
    fn is_subject(&self, subject: &str) -> bool {
        match self {
            Principal::Anonymous => subject == ANONYMOUS,
            Principal::User { name, .. } => {
                subject == ANONYMOUS || subject == EVERYONE || subject == *name
            }
        }
    }
}

/// The actions `principal` holds on the repository `name` through `grants`.
pub fn repository_actions(principal: Principal<'_>, grants: &[Grant], name: &str) -> ActionSet {
    if let Principal::User { admin: true, .. } = principal {
        return ActionSet::ALL;
    }
    grants
        .iter()
        .filter(|g| principal.is_subject(&g.subject))
        .filter_map(|g| match &g.target {
            Target::Repository(p) if pattern_matches(p, principal.name(), name) => Some(g.actions),
            _ => None,
        })
        .fold(ActionSet::EMPTY, |a, b| a | b)
}

fn holds_catalog(principal: Principal<'_>, grants: &[Grant]) -> bool {
    match principal {
        Principal::User { admin: true, .. } => true,
        _ => grants
            .iter()
            .any(|g| g.target == Target::Catalog && principal.is_subject(&g.subject)),
    }
}

/// The `access` claim for a request: for each requested resource, the
/// requested actions that are also granted. Resources with nothing left are
/// left out; unknown resource types and actions are ignored. A repository
/// scope naming an invalid repository is a client error.
pub fn authorize(
    principal: Principal<'_>,
    grants: &[Grant],
    requested: &[Scope],
) -> Result<Vec<ResourceActions>, Error> {
    if requested.len() > MAX_SCOPES {
        return Err(Error::bad_request(
            "invalid_scope",
            format!("too many scopes (at most {MAX_SCOPES})"),
        ));
    }
    // Merge repeated resources first: `repository:a:pull repository:a:push`.
    let mut wanted: Vec<(&str, &str, ActionSet, bool)> = Vec::new();
    for scope in requested {
        let kind = scope.resource_type.as_str();
        let name = scope.name.as_str();
        let set = scope
            .known_actions()
            .fold(ActionSet::EMPTY, |s, a| s | ActionSet::of(a));
        let star = scope.actions.iter().any(|a| a == "*");
        match kind {
            "repository" if !token::name::is_valid_repository(name) => {
                return Err(Error::bad_request(
                    "invalid_scope",
                    format!("invalid repository name in scope {scope}"),
                ));
            }
            "repository" => {}
            k if k == token::CATALOG_TYPE && name == token::CATALOG_NAME => {}
            k if k == token::ADMIN_TYPE && name == token::ADMIN_NAME => {}
            _ => continue,
        }
        match wanted
            .iter_mut()
            .find(|(k, n, _, _)| *k == kind && *n == name)
        {
            Some(entry) => {
                entry.2 = entry.2 | set;
                entry.3 |= star;
            }
            None => wanted.push((kind, name, set, star)),
        }
    }
    let is_admin = matches!(principal, Principal::User { admin: true, .. });
    let mut access = Vec::new();
    for (kind, name, set, star) in wanted {
        let granted = if kind == "repository" {
            let held = repository_actions(principal, grants, name) & set;
            if star && held == ActionSet::ALL {
                vec!["*".to_owned()]
            } else {
                held.actions()
                    .iter()
                    .map(|a| a.as_str().to_owned())
                    .collect()
            }
        } else if kind == token::CATALOG_TYPE {
            if holds_catalog(principal, grants) && star {
                vec!["*".to_owned()]
            } else {
                // Not the whole catalog: the entry (without actions) lets
                // the registry answer with the repositories this principal
                // may pull, which the pattern entries describe.
                access.push(ResourceActions {
                    resource_type: kind.to_owned(),
                    name: name.to_owned(),
                    actions: Vec::new(),
                });
                access.extend(catalog_patterns(principal, grants));
                continue;
            }
        } else if is_admin && star {
            vec!["*".to_owned()]
        } else {
            Vec::new()
        };
        if !granted.is_empty() {
            access.push(ResourceActions {
                resource_type: kind.to_owned(),
                name: name.to_owned(),
                actions: granted,
            });
        }
    }
    Ok(access)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(subject: &str, pattern: &str, actions: &str) -> Grant {
        let target = if pattern == "catalog" {
            Target::Catalog
        } else {
            Target::Repository(pattern.to_owned())
        };
        Grant {
            id: 0,
            subject: subject.to_owned(),
            target,
            actions: ActionSet::parse(actions.split(',')).unwrap(),
            created_at: 0,
        }
    }

    fn scopes(s: &str) -> Vec<Scope> {
        Scope::parse_all([s]).unwrap()
    }

    fn alice() -> Principal<'static> {
        Principal::User {
            name: "alice",
            admin: false,
        }
    }

    fn show(access: &[ResourceActions]) -> Vec<String> {
        access
            .iter()
            .map(|ra| format!("{}:{}:{}", ra.resource_type, ra.name, ra.actions.join(",")))
            .collect()
    }

    #[test]
    fn globs() {
        assert!(pattern_matches("*", None, "a/b/c"));
        assert!(pattern_matches("team/*", None, "team/app"));
        assert!(pattern_matches("team/*", None, "team/app/sub"));
        assert!(!pattern_matches("team/*", None, "team"));
        assert!(!pattern_matches("team/*", None, "teams/app"));
        assert!(pattern_matches("library/alpine", None, "library/alpine"));
        assert!(!pattern_matches("library/alpine", None, "library/alpine2"));
        assert!(pattern_matches("*/app", None, "x/y/app"));
        assert!(pattern_matches("a*b*c", None, "aXXbYYc"));
        assert!(!pattern_matches("a*b*c", None, "aXXbYY"));
        assert!(pattern_matches("**", None, ""));
        // Pathological pattern stays fast.
        let s = "a".repeat(200);
        assert!(!pattern_matches(&format!("{}b", "*a".repeat(20)), None, &s));
    }

    #[test]
    fn user_placeholder() {
        assert!(pattern_matches("${user}/*", Some("alice"), "alice/app"));
        assert!(!pattern_matches("${user}/*", Some("alice"), "bob/app"));
        assert!(!pattern_matches("${user}/*", Some("alice"), "alice"));
        assert!(!pattern_matches("${user}/*", None, "alice/app"));
        assert!(pattern_matches("home/${user}", Some("bob"), "home/bob"));
    }

    #[test]
    fn names_subjects_and_patterns() {
        for ok in [
            "alice",
            "a",
            "ci-bot",
            "first.last",
            "a_b",
            "a__b",
            "a--b",
            "x9",
        ] {
            assert!(is_valid_user_name(ok), "{ok}");
        }
        for bad in [
            "",
            "anonymous",
            "-x",
            ".x",
            "x-",
            "a..b",
            "a___b",
            "A_B",
            "Alice",
            "first.last@example.com",
            "a/b",
            "a b",
            "a:b",
            "a'; DROP TABLE users;--",
            "é",
            "*",
            &"a".repeat(65),
        ] {
            assert!(!is_valid_user_name(bad), "{bad:?}");
        }
        assert!(check_subject("*").is_ok());
        assert!(check_subject("anonymous").is_ok());
        assert!(check_subject("x y").is_err());
        assert!(Target::parse(None, "team/*").is_ok());
        assert!(Target::parse(None, "${user}/*").is_ok());
        assert_eq!(
            Target::parse(None, "registry:catalog:*").unwrap(),
            Target::Catalog
        );
        assert_eq!(
            Target::parse(Some("registry"), "catalog").unwrap(),
            Target::Catalog
        );
        for bad in ["", "Team/*", "a b", "x'--", "registry:other"] {
            assert!(Target::parse(None, bad).is_err(), "{bad:?}");
        }
        assert!(Target::parse(Some("registry"), "team/*").is_err());
        assert!(Target::parse(Some("plugin"), "x").is_err());
    }

    #[test]
    fn action_sets() {
        let s = ActionSet::parse(["push", "pull"]).unwrap();
        assert_eq!(s.names(), ["pull", "push"]);
        assert_eq!(ActionSet::parse(["pull", "*"]).unwrap().names(), ["*"]);
        assert_eq!(
            ActionSet::parse(["pull", "push", "delete"]).unwrap(),
            ActionSet::ALL
        );
        assert!(ActionSet::parse(["pull", "frob"]).is_err());
        assert!(ActionSet::ALL.contains(s));
        assert!(!s.contains(ActionSet::ALL));
    }

    #[test]
    fn intersection_of_requested_and_granted() {
        let grants = [
            grant("alice", "team/*", "pull,push"),
            grant("*", "${user}/*", "*"),
            grant("anonymous", "public/*", "pull"),
            grant("bob", "secret/*", "*"),
        ];
        let access = authorize(
            alice(),
            &grants,
            &scopes(
                "repository:team/app:pull,push,delete repository:alice/x:* \
                 repository:public/img:pull,push repository:secret/a:pull repository:bob/y:pull",
            ),
        )
        .unwrap();
        assert_eq!(
            show(&access),
            [
                "repository:team/app:pull,push",
                "repository:alice/x:*",
                "repository:public/img:pull",
            ]
        );
    }

    #[test]
    fn repeated_scopes_merge_and_star_expands() {
        let grants = [grant("alice", "team/*", "pull,push")];
        let access = authorize(
            alice(),
            &grants,
            &scopes("repository:team/a:pull repository:team/a:push repository:team/b:*"),
        )
        .unwrap();
        assert_eq!(
            show(&access),
            ["repository:team/a:pull,push", "repository:team/b:pull,push"]
        );
    }

    #[test]
    fn anonymous_gets_only_anonymous_grants() {
        let grants = [
            grant("anonymous", "public/*", "pull"),
            grant("*", "*", "pull"),
            grant("*", "${user}/*", "*"),
            grant("anonymous", "catalog", "*"),
        ];
        let access = authorize(
            Principal::Anonymous,
            &grants,
            &scopes("repository:public/a:pull,push repository:private/b:pull registry:catalog:*"),
        )
        .unwrap();
        assert_eq!(
            show(&access),
            ["repository:public/a:pull", "registry:catalog:*"]
        );
    }

    #[test]
    fn catalog_and_admin_scopes() {
        let grants = [grant("alice", "catalog", "*")];
        let req = scopes("registry:catalog:* authd:admin:*");
        assert_eq!(
            show(&authorize(alice(), &grants, &req).unwrap()),
            ["registry:catalog:*"]
        );
        let bob = Principal::User {
            name: "bob",
            admin: false,
        };
        // Without the catalog grant: the filtered form, with the patterns
        // bob may pull (here none, then his own namespace and a team).
        assert_eq!(
            show(&authorize(bob, &grants, &req).unwrap()),
            ["registry:catalog:"]
        );
        let more = [
            grant("alice", "catalog", "*"),
            grant("*", "${user}/*", "*"),
            grant("bob", "team/*", "pull"),
            grant("bob", "drop-box", "push"),
            grant("anonymous", "public/*", "pull"),
        ];
        assert_eq!(
            show(&authorize(bob, &more, &req).unwrap()),
            [
                "registry:catalog:",
                "repository-pattern:bob/*:pull",
                "repository-pattern:public/*:pull",
                "repository-pattern:team/*:pull"
            ]
        );
        assert_eq!(
            show(&authorize(Principal::Anonymous, &more, &req).unwrap()),
            ["registry:catalog:", "repository-pattern:public/*:pull"]
        );
        let root = Principal::User {
            name: "root",
            admin: true,
        };
        assert_eq!(
            show(&authorize(root, &[], &req).unwrap()),
            ["registry:catalog:*", "authd:admin:*"]
        );
        // A grant can never give admin access.
        let sneaky = [grant("alice", "*", "*")];
        assert!(
            authorize(alice(), &sneaky, &scopes("authd:admin:*"))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn admins_hold_every_repository() {
        let root = Principal::User {
            name: "root",
            admin: true,
        };
        let access =
            authorize(root, &[], &scopes("repository:any/thing:pull,push,delete")).unwrap();
        assert_eq!(show(&access), ["repository:any/thing:pull,push,delete"]);
    }

    #[test]
    fn odd_scopes() {
        let grants = [grant("*", "*", "*")];
        // Unknown types and actions are ignored.
        let access = authorize(
            alice(),
            &grants,
            &scopes("repository(plugin):a/b:pull,frob widget:x:pull repository:c:frob"),
        )
        .unwrap();
        assert_eq!(show(&access), ["repository:a/b:pull"]);
        // Names that are not repository names are refused clearly.
        for bad in [
            "repository:localhost:5000/app:pull",
            "repository:héllo:pull",
            "repository:Upper:pull",
            &format!("repository:{}:pull", "a".repeat(256)),
        ] {
            let err = authorize(alice(), &grants, &scopes(bad)).unwrap_err();
            assert_eq!(err.code(), "invalid_scope", "{bad}");
        }
        let many = vec!["repository:a:pull"; MAX_SCOPES + 1].join(" ");
        assert!(authorize(alice(), &grants, &scopes(&many)).is_err());
    }
}
