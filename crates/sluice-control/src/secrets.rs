//! Secrets: encrypted at rest with AES-256-GCM under a platform key, bound to their team and
//! name (so a ciphertext cannot be moved to another secret), never returned by the API, and
//! redacted from everything the platform shows. Workers get the secrets their spec names as
//! environment variables `SLUICE_SECRET_<NAME>`, at run time only.

use std::path::Path;

use anyhow::{Context, bail};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

/// Environment variable holding the platform key (64 hex characters); without it the key is
/// kept in `<data-dir>/secret.key`, created on first start and readable by the owner only.
pub const KEY_ENV: &str = "SLUICE_SECRET_KEY";

/// Shortest secret value accepted: shorter ones could not be redacted without garbling logs.
pub const MIN_SECRET_LEN: usize = 4;

/// The platform key.
pub struct SecretKey {
    key: LessSafeKey,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(***)")
    }
}

impl SecretKey {
    /// The key from `SLUICE_SECRET_KEY`, or from `<data_dir>/secret.key` (created if missing).
    pub fn load(data_dir: &Path) -> anyhow::Result<SecretKey> {
        if let Ok(text) = std::env::var(KEY_ENV) {
            return SecretKey::from_hex(text.trim()).with_context(|| format!("{KEY_ENV} is not a valid key"));
        }
        let path = data_dir.join("secret.key");
        if !path.exists() {
            let mut bytes = [0u8; 32];
            SystemRandom::new()
                .fill(&mut bytes)
                .map_err(|_| anyhow::anyhow!("the system random source failed"))?;
            write_private(&path, &hex::encode(bytes))?;
        }
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        SecretKey::from_hex(text.trim()).with_context(|| format!("{} is not a valid key", path.display()))
    }

    /// A key from 64 hex characters.
    pub fn from_hex(text: &str) -> anyhow::Result<SecretKey> {
        let bytes = hex::decode(text).context("not hex")?;
        if bytes.len() != 32 {
            bail!("a key is 32 bytes (64 hex characters), not {}", bytes.len());
        }
        let key = UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| anyhow::anyhow!("not an AES-256 key"))?;
        Ok(SecretKey { key: LessSafeKey::new(key) })
    }

    /// Encrypts `value` of secret `team/name`: hex of a random nonce, the ciphertext and its tag.
    pub fn seal(&self, team: &str, name: &str, value: &str) -> anyhow::Result<String> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| anyhow::anyhow!("the system random source failed"))?;
        let mut data = value.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(identity(team, name)),
                &mut data,
            )
            .map_err(|_| anyhow::anyhow!("encryption failed"))?;
        Ok(hex::encode([&nonce[..], &data].concat()))
    }

    /// Decrypts what [`SecretKey::seal`] made for the same `team/name`.
    pub fn open(&self, team: &str, name: &str, sealed: &str) -> anyhow::Result<String> {
        let bytes = hex::decode(sealed).context("a stored secret is not hex")?;
        if bytes.len() < NONCE_LEN {
            bail!("a stored secret is truncated");
        }
        let (nonce, data) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| anyhow::anyhow!("bad nonce"))?;
        let mut data = data.to_vec();
        let plain =
            self.key.open_in_place(nonce, Aad::from(identity(team, name)), &mut data).map_err(|_| {
                anyhow::anyhow!(
                    "secret {team}/{name} cannot be decrypted: wrong key, or the stored value was altered"
                )
            })?;
        String::from_utf8(plain.to_vec()).context("a secret is not UTF-8")
    }
}

fn identity(team: &str, name: &str) -> Vec<u8> {
    format!("sluice-secret:{team}/{name}").into_bytes()
}

/// The environment variable that carries secret `name` into workers.
pub fn env_name(name: &str) -> String {
    format!("SLUICE_SECRET_{}", name.to_ascii_uppercase().replace('-', "_"))
}

/// The `SLUICE_SECRET_*` variable names in `text`.
pub fn secret_references(text: &str) -> Vec<&str> {
    let prefix = "SLUICE_SECRET_";
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(prefix) {
        let tail = &rest[start..];
        let end = tail
            .char_indices()
            .find(|(_, c)| !(c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_'))
            .map_or(tail.len(), |(index, _)| index);
        if end > prefix.len() {
            found.push(&tail[..end]);
        }
        rest = &tail[end.max(prefix.len())..];
    }
    found
}

/// Replaces every known secret value in text with `***`.
#[derive(Debug, Default, Clone)]
pub struct Redactor {
    values: Vec<String>,
}

impl Redactor {
    /// A redactor for `values` (longest first, so one secret inside another is fully hidden).
    pub fn new(values: impl IntoIterator<Item = String>) -> Redactor {
        let mut values: Vec<String> = values.into_iter().filter(|v| v.len() >= MIN_SECRET_LEN).collect();
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        Redactor { values }
    }

    /// `text` with every secret replaced.
    pub fn redact(&self, text: &str) -> String {
        self.values.iter().fold(text.to_string(), |text, value| text.replace(value.as_str(), "***"))
    }
}

/// Writes `text` to a new file readable by the owner only.
pub fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(text.as_bytes()).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SecretKey {
        SecretKey::from_hex(&"ab".repeat(32)).unwrap()
    }

    #[test]
    fn sealed_values_open_only_with_the_same_key_and_identity() {
        let sealed = key().seal("payments", "db-url", "postgres://u:hunter22@db/x").unwrap();
        assert!(!sealed.contains("hunter22") && !sealed.contains(&hex::encode("hunter22")));
        assert_eq!(key().open("payments", "db-url", &sealed).unwrap(), "postgres://u:hunter22@db/x");
        assert_ne!(
            sealed,
            key().seal("payments", "db-url", "postgres://u:hunter22@db/x").unwrap(),
            "fresh nonces"
        );
        // Moved to another secret or team, altered, or opened with another key: refused.
        assert!(key().open("risk", "db-url", &sealed).is_err());
        assert!(key().open("payments", "other", &sealed).is_err());
        let mut altered = sealed.clone().into_bytes();
        altered[30] = if altered[30] == b'0' { b'1' } else { b'0' };
        assert!(key().open("payments", "db-url", &String::from_utf8(altered).unwrap()).is_err());
        assert!(SecretKey::from_hex(&"cd".repeat(32)).unwrap().open("payments", "db-url", &sealed).is_err());
        assert!(key().open("payments", "db-url", "00").is_err());
        assert!(SecretKey::from_hex("abcd").is_err());
    }

    #[test]
    fn the_key_file_is_created_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let sealed = SecretKey::load(dir.path()).unwrap().seal("t", "n", "value").unwrap();
        let reloaded = SecretKey::load(dir.path()).unwrap();
        assert_eq!(reloaded.open("t", "n", &sealed).unwrap(), "value");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("secret.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn secret_references_are_found_in_any_text() {
        assert_eq!(secret_references("SLUICE_SECRET_DB_URL"), vec!["SLUICE_SECRET_DB_URL"]);
        assert_eq!(
            secret_references("Bearer ${env:SLUICE_SECRET_API_TOKEN} and ${env:SLUICE_SECRET_X2}"),
            vec!["SLUICE_SECRET_API_TOKEN", "SLUICE_SECRET_X2"]
        );
        assert!(secret_references("SLUICE_SECRET_ alone, or plain text").is_empty());
    }

    #[test]
    fn redaction_hides_every_value_longest_first() {
        let redactor =
            Redactor::new(["token-123".to_string(), "token-123-extended".to_string(), "ab".to_string()]);
        assert_eq!(redactor.redact("a token-123-extended and token-123; ab"), "a *** and ***; ab");
        assert_eq!(env_name("warehouse-url"), "SLUICE_SECRET_WAREHOUSE_URL");
    }
}
