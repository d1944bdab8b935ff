//! Who is calling and what they may do: API tokens (stored as SHA-256 hashes), roles per team,
//! platform admins, and the access rule every route declares.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

/// A role within one team, ordered by what it allows: each includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads the team's pipelines, datasets and events.
    Viewer,
    /// Also creates, changes, deploys, starts and stops the team's pipelines.
    Developer,
    /// Also manages the team's members.
    Admin,
}

impl Role {
    /// Every role, least to most.
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Developer, Role::Admin];

    /// The role's name as written in the API.
    pub fn name(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Developer => "developer",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|role| role.name() == text)
            .ok_or_else(|| format!("unknown role \"{text}\"; use viewer, developer or admin"))
    }
}

/// What a route requires of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, without credentials (health checks only).
    Public,
    /// Any authenticated user.
    Authenticated,
    /// At least this role in the team named by the route's `{team}` segment.
    Team(Role),
    /// A platform admin.
    PlatformAdmin,
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Access::Public => f.write_str("public"),
            Access::Authenticated => f.write_str("any authenticated user"),
            Access::Team(role) => write!(f, "team {role} or above"),
            Access::PlatformAdmin => f.write_str("platform admin"),
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Principal {
    /// The user's name.
    pub user: String,
    /// Platform admins may do everything.
    pub platform_admin: bool,
    /// The user's role in each team they belong to.
    pub roles: BTreeMap<String, Role>,
}

impl Principal {
    /// Whether this principal satisfies `access` for `team` (the route's `{team}`, if any).
    pub fn allows(&self, access: Access, team: Option<&str>) -> bool {
        if self.platform_admin {
            return true;
        }
        match access {
            Access::Public | Access::Authenticated => true,
            Access::PlatformAdmin => false,
            Access::Team(needed) => {
                team.and_then(|team| self.roles.get(team)).is_some_and(|role| *role >= needed)
            }
        }
    }

    /// The principal's role in `team`, platform admins being admins everywhere.
    pub fn role_in(&self, team: &str) -> Option<Role> {
        if self.platform_admin { Some(Role::Admin) } else { self.roles.get(team).copied() }
    }
}

/// Prefix of every API token, so leaked tokens are recognizable by secret scanners.
pub const TOKEN_PREFIX: &str = "slc_";

/// A new API token: its secret text (shown once) and the hash stored in its place.
pub struct NewToken {
    /// The token to hand to the user; never stored.
    pub secret: String,
    /// `hash_token(secret)`.
    pub hash: String,
    /// A public identifier to list and revoke the token by.
    pub id: String,
}

/// Generates a token with 256 random bits from the operating system.
pub fn new_token() -> Result<NewToken, String> {
    let secret = format!("{TOKEN_PREFIX}{}", random_hex(32)?);
    let id = format!("tok_{}", random_hex(8)?);
    Ok(NewToken { hash: hash_token(&secret), secret, id })
}

/// The stored form of a token. Tokens are 256-bit random values, so a fast hash is enough:
/// nothing can be guessed by brute force, and a slow password hash would cost every request.
pub fn hash_token(secret: &str) -> String {
    hex::encode(digest::digest(&digest::SHA256, secret.as_bytes()))
}

/// `bytes` random bytes from the operating system, as hex.
pub fn random_hex(bytes: usize) -> Result<String, String> {
    let mut buffer = vec![0; bytes];
    SystemRandom::new()
        .fill(&mut buffer)
        .map_err(|_| "the operating system's random source failed".to_string())?;
    Ok(hex::encode(buffer))
}

/// Checks a team, user or pipeline name: `[a-z0-9][a-z0-9_-]*`, at most 63 characters.
pub fn check_name(kind: &str, name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{kind} name \"{name}\" is not valid: use 1 to 63 lowercase letters, digits, '-' or '_', starting with a letter or digit"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(platform_admin: bool, roles: &[(&str, Role)]) -> Principal {
        Principal {
            user: "u".into(),
            platform_admin,
            roles: roles.iter().map(|(team, role)| (team.to_string(), *role)).collect(),
        }
    }

    #[test]
    fn team_access_needs_the_role_in_that_team() {
        let developer = principal(false, &[("payments", Role::Developer)]);
        assert!(developer.allows(Access::Team(Role::Viewer), Some("payments")));
        assert!(developer.allows(Access::Team(Role::Developer), Some("payments")));
        assert!(!developer.allows(Access::Team(Role::Admin), Some("payments")));
        assert!(!developer.allows(Access::Team(Role::Viewer), Some("risk")));
        assert!(!developer.allows(Access::Team(Role::Viewer), None));
        assert!(!developer.allows(Access::PlatformAdmin, None));
        assert!(developer.allows(Access::Authenticated, None));
        assert!(principal(true, &[]).allows(Access::Team(Role::Admin), Some("risk")));
    }

    #[test]
    fn tokens_are_random_and_only_their_hash_matches() {
        let one = new_token().unwrap();
        let two = new_token().unwrap();
        assert_ne!(one.secret, two.secret);
        assert!(one.secret.starts_with(TOKEN_PREFIX) && one.secret.len() == TOKEN_PREFIX.len() + 64);
        assert_eq!(hash_token(&one.secret), one.hash);
        assert_ne!(hash_token(&two.secret), one.hash);
        assert!(!one.hash.contains(&one.secret[TOKEN_PREFIX.len()..]));
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("team", "payments-eu_1").is_ok());
        for bad in ["", "-x", "Payments", "a b", "x/y", &"a".repeat(64)] {
            assert!(check_name("team", bad).is_err(), "{bad:?}");
        }
        assert_eq!("developer".parse::<Role>(), Ok(Role::Developer));
        assert!("owner".parse::<Role>().unwrap_err().contains("viewer, developer or admin"));
    }
}
