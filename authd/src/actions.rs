//! `ActionSet`: a set of registry actions (pull, push, delete), parsed
//! from and shown as the names grants and tokens use.

use std::fmt;

use token::Action;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
