//! Grants: (subject, target, actions) rows as stored and shown, the
//! parsing of a grant given through the API or the CLI, and a user's
//! entitlements (its groups and every grant that applies to it).

use serde::Serialize;

use crate::actions::ActionSet;
use crate::error::Error;
use crate::names::{ANONYMOUS, check_subject};
use crate::target::{Target, USER_PLACEHOLDER};

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

/// Checks a grant given through the API or CLI and returns its parts.
pub fn parse_grant(
    subject: &str,
    resource_type: Option<&str>,
    pattern: &str,
    actions: &[String],
) -> Result<(Target, ActionSet), Error> {
    check_subject(subject)?;
    if subject == ANONYMOUS && pattern.contains(USER_PLACEHOLDER) {
        return Err(Error::bad_request(
            "invalid_pattern",
            "anonymous requests have no user: ${user} cannot be used",
        ));
    }
    parse_target_actions(resource_type, pattern, actions)
}

/// Checks a (target, actions) pair given through the API or CLI — of a
/// grant or of an access token's scope.
pub fn parse_target_actions(
    resource_type: Option<&str>,
    pattern: &str,
    actions: &[String],
) -> Result<(Target, ActionSet), Error> {
    let target = Target::parse(resource_type, pattern)?;
    let actions = match (&target, actions.is_empty()) {
        (Target::Catalog, true) => ActionSet::ALL,
        (_, true) => {
            return Err(Error::bad_request(
                "invalid_actions",
                "actions are required (pull, push, delete or *)",
            ));
        }
        (_, false) => ActionSet::parse(actions.iter().flat_map(|a| a.split(',')))
            .map_err(|e| Error::bad_request("invalid_actions", e))?,
    };
    if target == Target::Catalog && actions != ActionSet::ALL {
        return Err(Error::bad_request(
            "invalid_actions",
            "the catalog grant takes the action * only",
        ));
    }
    Ok((target, actions))
}

/// What applies to a user: its groups (as subjects, `@name`) and every
/// grant whose subject covers it (its own, its groups', `*`, `anonymous`).
#[derive(Debug, Default)]
pub struct Entitlements {
    pub groups: Vec<String>,
    pub grants: Vec<Grant>,
}
