//! OpenID Connect: API calls may carry a JWT from the organisation's identity provider instead
//! of a Sluice token. It is verified against the issuer's published keys (JWKS, fetched and
//! cached; refetched when a token names an unknown key), its issuer, audience and lifetime; the
//! configured claim names a Sluice user, whose roles apply. RS256 and ES256 are accepted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::Mutex;

/// Where tokens come from and how they name users.
#[derive(Debug, Clone)]
pub struct OidcConfig {
    /// The `iss` every token must carry.
    pub issuer: String,
    /// The URL of the issuer's JSON Web Key Set.
    pub jwks_url: String,
    /// The `aud` tokens must be for, if set.
    pub audience: Option<String>,
    /// The claim holding the Sluice user name (`sub` by default).
    pub user_claim: String,
}

/// Verifies JWTs for one issuer.
pub struct Verifier {
    config: OidcConfig,
    client: reqwest::Client,
    keys: Mutex<Keys>,
}

#[derive(Default)]
struct Keys {
    set: Vec<Jwk>,
    fetched: Option<Instant>,
}

#[derive(Debug, Clone, Deserialize)]
struct Jwk {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

/// Allowed clock difference between Sluice and the issuer.
const LEEWAY_SECONDS: i64 = 60;
/// Least time between two fetches of the key set (unknown key ids cannot force more).
const REFETCH_AFTER: Duration = Duration::from_secs(30);

impl Verifier {
    /// A verifier for `config`; keys are fetched on first use.
    pub fn new(config: OidcConfig) -> Arc<Verifier> {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap_or_default();
        Arc::new(Verifier { config, client, keys: Mutex::new(Keys::default()) })
    }

    /// Whether `token` looks like a JWT (three base64url parts), not a Sluice token.
    pub fn is_jwt(token: &str) -> bool {
        token.split('.').count() == 3 && !token.starts_with(crate::auth::TOKEN_PREFIX)
    }

    /// The user name `token` vouches for, or why it is not accepted.
    pub async fn verify(&self, token: &str, now_seconds: i64) -> Result<String, String> {
        let mut parts = token.split('.');
        let (Some(header), Some(claims), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("not a JWT".into());
        };
        let decode = |part: &str, what: &str| {
            URL_SAFE_NO_PAD.decode(part).map_err(|_| format!("the JWT's {what} is not base64url"))
        };
        let header: Header = serde_json::from_slice(&decode(header, "header")?)
            .map_err(|_| "the JWT header is not JSON".to_string())?;
        let claims_bytes = decode(claims, "claims")?;
        let signature = decode(signature, "signature")?;
        let signed = &token[..token.rfind('.').unwrap_or(0)];
        let key = self.key(header.kid.as_deref(), &header.alg).await?;
        verify_signature(&key, &header.alg, signed.as_bytes(), &signature)?;
        let claims: Value =
            serde_json::from_slice(&claims_bytes).map_err(|_| "the JWT claims are not JSON".to_string())?;
        self.check_claims(&claims, now_seconds)
    }

    fn check_claims(&self, claims: &Value, now: i64) -> Result<String, String> {
        if claims["iss"].as_str() != Some(self.config.issuer.as_str()) {
            return Err(format!("the token's issuer is not {}", self.config.issuer));
        }
        if let Some(audience) = &self.config.audience {
            let matches = match &claims["aud"] {
                Value::String(aud) => aud == audience,
                Value::Array(auds) => auds.iter().any(|aud| aud.as_str() == Some(audience)),
                _ => false,
            };
            if !matches {
                return Err(format!("the token is not for audience {audience}"));
            }
        }
        let Some(expires) = claims["exp"].as_i64() else {
            return Err("the token has no expiry (exp)".into());
        };
        if expires + LEEWAY_SECONDS < now {
            return Err("the token has expired".into());
        }
        if claims["nbf"].as_i64().is_some_and(|not_before| not_before - LEEWAY_SECONDS > now) {
            return Err("the token is not valid yet".into());
        }
        claims[self.config.user_claim.as_str()]
            .as_str()
            .filter(|user| !user.is_empty())
            .map(str::to_string)
            .ok_or_else(|| format!("the token has no \"{}\" claim naming the user", self.config.user_claim))
    }

    async fn key(&self, kid: Option<&str>, alg: &str) -> Result<Jwk, String> {
        let wanted = match alg {
            "RS256" => "RSA",
            "ES256" => "EC",
            other => return Err(format!("JWT algorithm {other} is not accepted (use RS256 or ES256)")),
        };
        let mut keys = self.keys.lock().await;
        let find = |set: &[Jwk]| {
            set.iter().find(|key| key.kty == wanted && (kid.is_none() || key.kid.as_deref() == kid)).cloned()
        };
        if let Some(key) = find(&keys.set) {
            return Ok(key);
        }
        if keys.fetched.is_some_and(|at| at.elapsed() < REFETCH_AFTER) {
            return Err("no key of the issuer matches the token".into());
        }
        keys.fetched = Some(Instant::now());
        let response = self
            .client
            .get(&self.config.jwks_url)
            .send()
            .await
            .map_err(|error| format!("cannot fetch the issuer's keys: {error}"))?;
        #[derive(Deserialize)]
        struct Set {
            keys: Vec<Jwk>,
        }
        let body =
            response.bytes().await.map_err(|error| format!("cannot fetch the issuer's keys: {error}"))?;
        let set: Set = serde_json::from_slice(&body)
            .map_err(|error| format!("the issuer's key set is not valid: {error}"))?;
        keys.set = set.keys;
        find(&keys.set).ok_or_else(|| "no key of the issuer matches the token".into())
    }
}

fn verify_signature(key: &Jwk, alg: &str, signed: &[u8], signature: &[u8]) -> Result<(), String> {
    let field = |value: &Option<String>, name: &str| {
        value
            .as_deref()
            .and_then(|text| URL_SAFE_NO_PAD.decode(text).ok())
            .ok_or_else(|| format!("the issuer's key lacks a valid \"{name}\""))
    };
    let verified = match alg {
        "RS256" => RsaPublicKeyComponents { n: field(&key.n, "n")?, e: field(&key.e, "e")? }
            .verify(&signature::RSA_PKCS1_2048_8192_SHA256, signed, signature)
            .is_ok(),
        "ES256" => {
            if key.crv.as_deref() != Some("P-256") {
                return Err("ES256 needs a P-256 key".into());
            }
            let point = [&[4u8][..], &field(&key.x, "x")?, &field(&key.y, "y")?].concat();
            UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                .verify(signed, signature)
                .is_ok()
        }
        other => return Err(format!("JWT algorithm {other} is not accepted")),
    };
    if verified { Ok(()) } else { Err("the token's signature does not verify".into()) }
}
