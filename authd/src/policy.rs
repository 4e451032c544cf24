//! The authorisation policy: the computation of a token's `access` claim
//! as the intersection of what was requested with what is granted.
//!
//! A grant is (subject, target, actions). The subject is a user name,
//! `anonymous` (requests without credentials, and every signed-in user too)
//! or `*` (any signed-in user). The target is a repository glob — `*`
//! matches any run of characters including `/`, and `${user}` stands for
//! the signed-in user's name — or the catalog, `registry:catalog`. Admins
//! hold everything, including `authd:admin:*`, which no grant can give.
//! A subject `@team` covers the members of the group `team`.
//!
//! An access token narrows further: what a request made with one obtains is
//! [`restrict`]ed to the token's scopes, evaluated at every request against
//! the owner's current grants; [`check_within`] keeps a new token's scopes
//! inside what its owner holds.

use token::{Action, ResourceActions, Scope};

use crate::access_tokens::TokenScope;
use crate::actions::ActionSet;
use crate::error::Error;
use crate::grants::{Entitlements, Grant};
use crate::names::{ANONYMOUS, EVERYONE};
use crate::target::{Target, expand_pattern, pattern_matches};

/// Longest scope list honoured in one token request.
pub const MAX_SCOPES: usize = 64;

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

/// Who is asking for a token.
#[derive(Debug, Clone, Copy)]
pub enum Principal<'a> {
    Anonymous,
    /// A signed-in user and the groups it belongs to (as subjects, `@name`).
    User {
        name: &'a str,
        admin: bool,
        groups: &'a [String],
    },
}

impl<'a> Principal<'a> {
    /// The user `name` with the groups of its `entitlements`.
    pub fn user(name: &'a str, admin: bool, entitlements: &'a Entitlements) -> Principal<'a> {
        Principal::User {
            name,
            admin,
            groups: &entitlements.groups,
        }
    }

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
            Principal::User { name, groups, .. } => {
                subject == ANONYMOUS
                    || subject == EVERYONE
                    || subject == *name
                    || groups.iter().any(|g| g == subject)
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

/// Narrows an `access` claim computed for a token's owner to the token's
/// scopes: repository actions to those a scope of the token also covers;
/// the catalog only with a catalog scope (else the filtered form listing
/// nothing); `authd:admin:*` only for a token made for the admin API.
pub fn restrict(
    access: Vec<ResourceActions>,
    owner: &str,
    scopes: &[TokenScope],
    admin: bool,
) -> Vec<ResourceActions> {
    let catalog = scopes.iter().any(|s| s.target == Target::Catalog);
    let mut narrowed = Vec::new();
    for mut ra in access {
        let kind = ra.resource_type.as_str();
        if kind == "repository" {
            let allowed = scopes
                .iter()
                .filter_map(|s| match &s.target {
                    Target::Repository(p) if pattern_matches(p, Some(owner), &ra.name) => {
                        Some(s.actions)
                    }
                    _ => None,
                })
                .fold(ActionSet::EMPTY, |a, b| a | b);
            let star = ra.actions.iter().any(|a| a == "*");
            let held = ActionSet::parse(ra.actions.iter().map(String::as_str)).unwrap_or_default()
                & allowed;
            if held == ActionSet::EMPTY {
                continue;
            }
            ra.actions = if star && held == ActionSet::ALL {
                vec!["*".to_owned()]
            } else {
                held.actions()
                    .iter()
                    .map(|a| a.as_str().to_owned())
                    .collect()
            };
            narrowed.push(ra);
        } else if kind == token::CATALOG_TYPE {
            if !catalog {
                ra.actions = Vec::new();
            }
            narrowed.push(ra);
        } else if kind == token::REPOSITORY_PATTERN_TYPE {
            if catalog {
                narrowed.push(ra);
            }
        } else if kind == token::ADMIN_TYPE && admin {
            narrowed.push(ra);
        }
    }
    narrowed
}

/// Refuses token scopes wider than what `principal` holds through
/// `grants`. A repository scope must be covered by grants that each match
/// its whole pattern (a grant glob matches the scope's glob taken as a
/// name: `*` covers `ci/*`, `ci/*` covers `ci/app`); scopes spanning
/// several grants are refused, which errs on the safe side.
pub fn check_within(
    principal: Principal<'_>,
    grants: &[Grant],
    scopes: &[TokenScope],
) -> Result<(), Error> {
    for scope in scopes {
        let (ok, what) = match &scope.target {
            Target::Repository(p) => {
                let name = expand_pattern(p, principal.name()).unwrap_or_default();
                let held = repository_actions(principal, grants, &name);
                (
                    held.contains(scope.actions),
                    format!("{name}:{}", scope.actions),
                )
            }
            Target::Catalog => (
                holds_catalog(principal, grants),
                format!("{}:{}", token::CATALOG_TYPE, token::CATALOG_NAME),
            ),
        };
        if !ok {
            return Err(Error::forbidden(format!(
                "token scope {what} is wider than what {:?} holds",
                principal.name().unwrap_or_default()
            )));
        }
    }
    Ok(())
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
            groups: &[],
        }
    }

    fn show(access: &[ResourceActions]) -> Vec<String> {
        access
            .iter()
            .map(|ra| format!("{}:{}:{}", ra.resource_type, ra.name, ra.actions.join(",")))
            .collect()
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
            groups: &[],
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
            groups: &[],
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
            groups: &[],
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

    fn token_scopes(list: &[&str]) -> Vec<TokenScope> {
        list.iter()
            .map(|s| TokenScope::parse_cli(s).unwrap())
            .collect()
    }

    #[test]
    fn groups_add_their_grants() {
        let grants = [
            grant("@devs", "dev/*", "pull,push"),
            grant("@ops", "ops/*", "pull"),
            grant("@qa", "qa/*", "pull"),
        ];
        let groups = ["@devs".to_owned(), "@ops".to_owned()];
        let gus = Principal::User {
            name: "gus",
            admin: false,
            groups: &groups,
        };
        let req =
            scopes("repository:dev/a:pull,push repository:ops/a:push,pull repository:qa/a:pull");
        assert_eq!(
            show(&authorize(gus, &grants, &req).unwrap()),
            ["repository:dev/a:pull,push", "repository:ops/a:pull"]
        );
        // Not a member: nothing; a user named like a group does not exist.
        assert!(authorize(alice(), &grants, &req).unwrap().is_empty());
    }

    #[test]
    fn restrict_to_token_scopes() {
        let grants = [
            grant("alice", "ci/*", "pull,push"),
            grant("alice", "other/*", "*"),
            grant("alice", "catalog", "*"),
        ];
        let req = scopes(
            "repository:ci/app:pull,push repository:other/app:* registry:catalog:* authd:admin:*",
        );
        let owner = authorize(alice(), &grants, &req).unwrap();
        let ci = token_scopes(&["ci/*=pull,push", "other/*=pull"]);
        assert_eq!(
            show(&restrict(owner.clone(), "alice", &ci, false)),
            [
                "repository:ci/app:pull,push",
                "repository:other/app:pull",
                "registry:catalog:"
            ]
        );
        // ${user} in a token scope is its owner; the catalog needs a scope.
        let mine = token_scopes(&["${user}/*=*", "registry:catalog"]);
        let req = scopes("repository:alice/x:* registry:catalog:*");
        let own = authorize(
            alice(),
            &[grant("*", "${user}/*", "*"), grant("alice", "catalog", "*")],
            &req,
        )
        .unwrap();
        assert_eq!(
            show(&restrict(own, "alice", &mine, false)),
            ["repository:alice/x:*", "registry:catalog:*"]
        );
        // The admin scope only for an admin token (of an admin).
        let root = Principal::User {
            name: "root",
            admin: true,
            groups: &[],
        };
        let all = authorize(root, &[], &scopes("repository:a:pull authd:admin:*")).unwrap();
        let any = token_scopes(&["*=pull"]);
        assert_eq!(
            show(&restrict(all.clone(), "root", &any, false)),
            ["repository:a:pull"]
        );
        assert_eq!(
            show(&restrict(all, "root", &any, true)),
            ["repository:a:pull", "authd:admin:*"]
        );
    }

    #[test]
    fn token_scopes_stay_within_the_owner() {
        let grants = [
            grant("alice", "ci/*", "pull,push"),
            grant("*", "${user}/*", "*"),
            grant("anonymous", "public/*", "pull"),
        ];
        for ok in [
            "ci/*=pull,push",
            "ci/app=push",
            "ci/a*=pull",
            "${user}/*=*",
            "alice/x=delete",
            "public/*=pull",
        ] {
            assert!(
                check_within(alice(), &grants, &token_scopes(&[ok])).is_ok(),
                "{ok}"
            );
        }
        for wide in [
            "ci/*=delete",
            "*=pull",
            "c*=pull",
            "bob/*=pull",
            "public/*=push",
            "registry:catalog",
        ] {
            let err = check_within(alice(), &grants, &token_scopes(&[wide])).unwrap_err();
            assert_eq!(err.status(), 403, "{wide}");
        }
    }
}
