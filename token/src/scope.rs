//! The `scope` grammar of Docker's token protocol: `type[(class)]:name:actions`.
//!
//! The type is what precedes the first `:`, the actions what follows the last
//! `:`, and the name is everything between, so that names such as
//! `localhost:5000/app` survive. Actions are comma separated.

use std::fmt;
use std::str::FromStr;

/// The actions the registry knows. Anything else in a scope is kept as text
/// by [`Scope`] and ignored when access is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    Pull,
    Push,
    Delete,
    /// `*`: every action on the resource.
    All,
}

impl Action {
    pub const fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
            Action::All => "*",
        }
    }

    /// Parses one known action name; unknown names give `None`.
    pub fn parse(s: &str) -> Option<Action> {
        match s {
            "pull" => Some(Action::Pull),
            "push" => Some(Action::Push),
            "delete" => Some(Action::Delete),
            "*" => Some(Action::All),
            _ => None,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One requested scope, as parsed from a `scope` parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// `repository`, `registry`, … without the class.
    pub resource_type: String,
    /// The part in parentheses after the type, e.g. `plugin`.
    pub class: Option<String>,
    pub name: String,
    /// Actions exactly as requested, in order, without empty entries or
    /// duplicates.
    pub actions: Vec<String>,
}

/// Why a scope string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("scope {0:?} is not of the form type:name:actions")]
    Shape(String),
    #[error("scope {0:?} has an empty resource type or name")]
    Empty(String),
    #[error("scope {0:?} has an unbalanced resource class")]
    Class(String),
    #[error("scope is longer than {MAX_SCOPE_LEN} bytes")]
    TooLong,
}

/// Scopes longer than this are refused outright: no valid name is that long.
pub const MAX_SCOPE_LEN: usize = 1024;

impl Scope {
    /// The known actions of this scope; unknown action names are dropped.
    pub fn known_actions(&self) -> impl Iterator<Item = Action> + '_ {
        self.actions.iter().filter_map(|a| Action::parse(a))
    }

    /// Parses every scope in `values`, where each value may itself hold
    /// several space-separated scopes (both forms are sent by clients).
    pub fn parse_all<'a>(
        values: impl IntoIterator<Item = &'a str>,
    ) -> Result<Vec<Scope>, ScopeError> {
        values
            .into_iter()
            .flat_map(str::split_whitespace)
            .map(str::parse)
            .collect()
    }
}

impl FromStr for Scope {
    type Err = ScopeError;

    fn from_str(s: &str) -> Result<Scope, ScopeError> {
        if s.len() > MAX_SCOPE_LEN {
            return Err(ScopeError::TooLong);
        }
        let (kind, rest) = s
            .split_once(':')
            .ok_or_else(|| ScopeError::Shape(s.to_owned()))?;
        let (name, actions) = rest
            .rsplit_once(':')
            .ok_or_else(|| ScopeError::Shape(s.to_owned()))?;
        let (resource_type, class) = match kind.split_once('(') {
            None if !kind.contains(')') => (kind, None),
            Some((t, c)) if c.ends_with(')') && !c[..c.len() - 1].contains(['(', ')']) => {
                (t, Some(c[..c.len() - 1].to_owned()))
            }
            _ => return Err(ScopeError::Class(s.to_owned())),
        };
        if resource_type.is_empty() || name.is_empty() {
            return Err(ScopeError::Empty(s.to_owned()));
        }
        let mut list: Vec<String> = Vec::new();
        for a in actions.split(',').map(str::trim).filter(|a| !a.is_empty()) {
            if !list.iter().any(|x| x == a) {
                list.push(a.to_owned());
            }
        }
        Ok(Scope {
            resource_type: resource_type.to_owned(),
            class,
            name: name.to_owned(),
            actions: list,
        })
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.resource_type)?;
        if let Some(class) = &self.class {
            write!(f, "({class})")?;
        }
        write!(f, ":{}:{}", self.name, self.actions.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_scope() {
        let s: Scope = "repository:library/alpine:pull,push".parse().unwrap();
        assert_eq!(s.resource_type, "repository");
        assert_eq!(s.class, None);
        assert_eq!(s.name, "library/alpine");
        assert_eq!(s.actions, ["pull", "push"]);
        assert_eq!(s.to_string(), "repository:library/alpine:pull,push");
    }

    #[test]
    fn name_may_hold_colons() {
        let s: Scope = "repository:localhost:5000/app:pull".parse().unwrap();
        assert_eq!(s.name, "localhost:5000/app");
        assert_eq!(s.actions, ["pull"]);
    }

    #[test]
    fn class_is_split_off() {
        let s: Scope = "repository(plugin):vieux/sshfs:pull".parse().unwrap();
        assert_eq!(s.resource_type, "repository");
        assert_eq!(s.class.as_deref(), Some("plugin"));
        assert_eq!(s.to_string(), "repository(plugin):vieux/sshfs:pull");
        assert!(matches!(
            "repository(plugin:x:pull".parse::<Scope>(),
            Err(ScopeError::Class(_))
        ));
        assert!(matches!(
            "repo)x:y:pull".parse::<Scope>(),
            Err(ScopeError::Class(_))
        ));
    }

    #[test]
    fn catalog_scope_and_unknown_actions() {
        let s: Scope = "registry:catalog:*".parse().unwrap();
        assert_eq!(s.known_actions().collect::<Vec<_>>(), [Action::All]);
        let s: Scope = "repository:a:pull,frobnicate,,pull".parse().unwrap();
        assert_eq!(s.actions, ["pull", "frobnicate"]);
        assert_eq!(s.known_actions().collect::<Vec<_>>(), [Action::Pull]);
    }

    #[test]
    fn empty_actions_are_allowed() {
        let s: Scope = "repository:a:".parse().unwrap();
        assert!(s.actions.is_empty());
    }

    #[test]
    fn malformed_scopes() {
        for bad in [
            "",
            "repository",
            "repository:a",
            ":a:pull",
            "repository::pull",
        ] {
            assert!(bad.parse::<Scope>().is_err(), "{bad:?}");
        }
        assert_eq!(
            format!("repository:{}:pull", "a".repeat(2000)).parse::<Scope>(),
            Err(ScopeError::TooLong)
        );
    }

    #[test]
    fn parse_all_splits_spaces_and_repeats() {
        let all = Scope::parse_all(["repository:a:pull repository:b:push", "registry:catalog:*"])
            .unwrap();
        let names: Vec<_> = all.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "catalog"]);
        assert!(Scope::parse_all(["repository:a:pull bogus"]).is_err());
    }

    #[test]
    fn unicode_names_parse_as_text() {
        let s: Scope = "repository:héllo/wörld:pull".parse().unwrap();
        assert_eq!(s.name, "héllo/wörld");
    }
}
