//! The claims of a registry bearer token and the access they grant.

use serde::{Deserialize, Deserializer, Serialize};

use crate::scope::Action;

/// One entry of the `access` claim: what the bearer may do on one resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceActions {
    #[serde(rename = "type")]
    pub resource_type: String,
    pub name: String,
    #[serde(default)]
    pub actions: Vec<String>,
}

impl ResourceActions {
    pub fn new(resource_type: &str, name: &str, actions: &[Action]) -> ResourceActions {
        ResourceActions {
            resource_type: resource_type.to_owned(),
            name: name.to_owned(),
            actions: actions.iter().map(|a| a.as_str().to_owned()).collect(),
        }
    }
}

/// The JWT claims authd signs. `aud` is always serialized as a plain string
/// (distribution 2.8 rejects an array) but an array is accepted on input so
/// tokens of other issuers can be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// The account; empty for anonymous tokens.
    #[serde(default)]
    pub sub: String,
    #[serde(deserialize_with = "one_or_many")]
    pub aud: String,
    pub exp: i64,
    #[serde(default)]
    pub nbf: i64,
    #[serde(default)]
    pub iat: i64,
    #[serde(default)]
    pub jti: String,
    #[serde(default)]
    pub access: Vec<ResourceActions>,
}

/// Reads `aud` given as a string or as an array; of an array the first
/// element is kept (verification has already checked membership).
fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Aud {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Aud::deserialize(d)? {
        Aud::One(s) => s,
        Aud::Many(v) => v.into_iter().next().unwrap_or_default(),
    })
}

/// What a caller may do, as a list of grants; the question asked by the
/// registry is always "may I do this action on that resource".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access(pub Vec<ResourceActions>);

impl Access {
    /// Whether `action` on `resource_type:name` is granted, directly or
    /// through `*`.
    pub fn allows(&self, resource_type: &str, name: &str, action: Action) -> bool {
        self.0.iter().any(|ra| {
            ra.resource_type == resource_type
                && ra.name == name
                && ra.actions.iter().any(|a| a == "*" || a == action.as_str())
        })
    }

    /// Whether every action in `actions` is granted on the repository `name`.
    pub fn allows_repository(&self, name: &str, actions: &[Action]) -> bool {
        actions.iter().all(|&a| self.allows("repository", name, a))
    }

    /// Whether the whole catalog may be listed.
    pub fn allows_catalog(&self) -> bool {
        self.allows(crate::CATALOG_TYPE, crate::CATALOG_NAME, Action::All)
    }

    /// Whether the token was issued for a catalog request (`registry:catalog`
    /// entry, with or without actions). Without `*`, such a token may list
    /// the repositories it may pull, see [`Access::lists_in_catalog`].
    pub fn has_catalog_entry(&self) -> bool {
        self.0
            .iter()
            .any(|ra| ra.resource_type == crate::CATALOG_TYPE && ra.name == crate::CATALOG_NAME)
    }

    /// Whether repository `name` is shown in a filtered catalog: the token
    /// may pull it, by an exact `repository` entry or a
    /// `repository-pattern` glob entry with `pull` (or `*`).
    pub fn lists_in_catalog(&self, name: &str) -> bool {
        self.allows("repository", name, Action::Pull)
            || self.0.iter().any(|ra| {
                ra.resource_type == crate::REPOSITORY_PATTERN_TYPE
                    && ra.actions.iter().any(|a| a == "*" || a == "pull")
                    && crate::name::glob_matches(&ra.name, name)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aud_is_a_string_on_output_and_either_on_input() {
        let c = Claims {
            iss: "authd".into(),
            sub: "alice".into(),
            aud: "registry".into(),
            exp: 2,
            nbf: 1,
            iat: 1,
            jti: "j".into(),
            access: vec![ResourceActions::new("repository", "a/b", &[Action::Pull])],
        };
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["aud"], "registry");
        assert_eq!(v["access"][0]["type"], "repository");
        let mut v2 = v.clone();
        v2["aud"] = serde_json::json!(["registry", "other"]);
        let back: Claims = serde_json::from_value(v2).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn access_checks() {
        let access = Access(vec![
            ResourceActions::new("repository", "a", &[Action::Pull]),
            ResourceActions::new("repository", "b", &[Action::All]),
            ResourceActions::new("registry", "catalog", &[Action::All]),
        ]);
        assert!(access.allows_repository("a", &[Action::Pull]));
        assert!(!access.allows_repository("a", &[Action::Pull, Action::Push]));
        assert!(access.allows_repository("b", &[Action::Pull, Action::Push, Action::Delete]));
        assert!(!access.allows_repository("c", &[Action::Pull]));
        assert!(access.allows_catalog());
        assert!(!Access::default().allows_catalog());
        assert!(access.has_catalog_entry());
        assert!(!Access::default().has_catalog_entry());
        // Actions only count for the resource type they were granted on.
        assert!(!access.allows("registry", "a", Action::Pull));
    }

    #[test]
    fn filtered_catalog() {
        let access = Access(vec![
            ResourceActions {
                resource_type: "registry".into(),
                name: "catalog".into(),
                actions: vec![],
            },
            ResourceActions::new("repository-pattern", "team/*", &[Action::Pull]),
            ResourceActions::new("repository-pattern", "push-only/*", &[Action::Push]),
            ResourceActions::new("repository", "exact", &[Action::Pull]),
        ]);
        assert!(access.has_catalog_entry() && !access.allows_catalog());
        assert!(access.lists_in_catalog("team/app"));
        assert!(access.lists_in_catalog("exact"));
        assert!(!access.lists_in_catalog("push-only/x"));
        assert!(!access.lists_in_catalog("other"));
        // Patterns list repositories; they never grant access to them.
        assert!(!access.allows_repository("team/app", &[Action::Pull]));
    }
}
