//! OIDC through the router: JWTs signed with real keys (ES256 generated here, RS256 generated
//! by the machine's `openssl`), the issuer's key set served over HTTP on loopback, and every
//! way a token can be wrong refused with 401.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair, RSA_PKCS1_SHA256, RsaKeyPair};
use serde_json::{Value, json};
use sluice_control::api::{Checker, router};
use sluice_control::oidc::OidcConfig;
use sluice_control::supervisor::RestartPolicy;
use sluice_control::{Config, ControlPlane};
use sluice_spec::Diagnostic;
use tower::ServiceExt;

struct Structure;

impl Checker for Structure {
    fn check(&self, _: &str, _: &Path) -> Result<(), Vec<Diagnostic>> {
        Ok(())
    }

    fn connectors(&self) -> Vec<&'static str> {
        vec!["datagen", "file"]
    }
}

const ISSUER: &str = "https://idp.example.test";

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

enum Signer {
    Ec(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

impl Signer {
    fn sign(&self, kid: &str, claims: &Value) -> String {
        let alg = match self {
            Signer::Ec(_) => "ES256",
            Signer::Rsa(_) => "RS256",
        };
        let header = json!({ "alg": alg, "kid": kid, "typ": "JWT" });
        let signed = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
        let rng = SystemRandom::new();
        let signature = match self {
            Signer::Ec(key) => key.sign(&rng, signed.as_bytes()).unwrap().as_ref().to_vec(),
            Signer::Rsa(key) => {
                let mut signature = vec![0; key.public().modulus_len()];
                key.sign(&RSA_PKCS1_SHA256, &rng, signed.as_bytes(), &mut signature).unwrap();
                signature
            }
        };
        format!("{signed}.{}", b64(&signature))
    }

    fn jwk(&self, kid: &str) -> Value {
        match self {
            Signer::Ec(key) => {
                let point = key.public_key().as_ref();
                json!({ "kty": "EC", "crv": "P-256", "kid": kid, "x": b64(&point[1..33]), "y": b64(&point[33..]) })
            }
            Signer::Rsa(key) => {
                let public: ring::rsa::PublicKeyComponents<Vec<u8>> = key.public().into();
                json!({ "kty": "RSA", "kid": kid, "alg": "RS256", "n": b64(&public.n), "e": b64(&public.e) })
            }
        }
    }
}

fn ec_key() -> Signer {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    Signer::Ec(EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap())
}

fn rsa_key() -> Signer {
    // PKCS#1 DER, which ring reads.
    let output = std::process::Command::new("sh")
        .args(["-c", "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 | openssl rsa -outform DER -traditional"])
        .output()
        .expect("openssl must be installed to generate the RS256 test key");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    Signer::Rsa(RsaKeyPair::from_der(&output.stdout).unwrap())
}

/// Serves `keys` as the issuer's key set; counts fetches.
async fn serve_jwks(keys: Value) -> (String, Arc<AtomicUsize>) {
    let fetches = Arc::new(AtomicUsize::new(0));
    let counter = fetches.clone();
    let app = Router::new().route(
        "/jwks",
        axum::routing::get(move || {
            let keys = keys.clone();
            counter.fetch_add(1, Ordering::SeqCst);
            async move { axum::Json(keys) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{address}/jwks"), fetches)
}

async fn whoami(router: &Router, token: &str) -> (StatusCode, Value) {
    let request = Request::get("/api/v1/whoami")
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn identity_provider_tokens_are_verified_and_map_to_users() {
    let ec = ec_key();
    let rsa = rsa_key();
    let stranger = ec_key();
    let (jwks_url, fetches) = serve_jwks(json!({ "keys": [ec.jwk("ec-1"), rsa.jwk("rsa-1")] })).await;
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_path_buf(),
        database: None,
        worker_program: "/nonexistent".into(),
        restart: RestartPolicy::default(),
        worker_log_limit: sluice_control::DEFAULT_WORKER_LOG_LIMIT,
        oidc: Some(OidcConfig {
            issuer: ISSUER.into(),
            jwks_url,
            audience: Some("sluice".into()),
            user_claim: "preferred_username".into(),
        }),
    };
    let control = ControlPlane::open(config, Arc::new(Structure)).await.unwrap();
    control.bootstrap().await.unwrap();
    let store = &control.app().store;
    store.create_team("payments", "").await.unwrap();
    store.create_user("vera", false).await.unwrap();
    store.bind_role("payments", "vera", sluice_control::auth::Role::Developer).await.unwrap();
    let router = router(control.app().clone());

    let now = sluice_control::store::now_ms() / 1000;
    let claims = |changes: Value| {
        let mut claims = json!({
            "iss": ISSUER, "aud": ["account", "sluice"], "preferred_username": "vera", "sub": "0f3c", "exp": now + 300, "iat": now
        });
        for (key, value) in changes.as_object().unwrap() {
            if value.is_null() {
                claims.as_object_mut().unwrap().remove(key);
            } else {
                claims[key] = value.clone();
            }
        }
        claims
    };
    for (signer, kid) in [(&ec, "ec-1"), (&rsa, "rsa-1")] {
        let (status, me) = whoami(&router, &signer.sign(kid, &claims(json!({})))).await;
        assert_eq!(
            (status, me["user"].as_str(), me["roles"]["payments"].as_str()),
            (StatusCode::OK, Some("vera"), Some("developer")),
            "{kid}: {me}"
        );
    }
    assert_eq!(fetches.load(Ordering::SeqCst), 1, "the key set is cached");

    let refused = [
        ("expired", ec.sign("ec-1", &claims(json!({ "exp": now - 3600 }))), "expired"),
        ("no expiry", ec.sign("ec-1", &claims(json!({ "exp": null }))), "no expiry"),
        ("not yet valid", ec.sign("ec-1", &claims(json!({ "nbf": now + 3600 }))), "not valid yet"),
        ("other issuer", ec.sign("ec-1", &claims(json!({ "iss": "https://evil.test" }))), "issuer"),
        ("other audience", ec.sign("ec-1", &claims(json!({ "aud": "payroll" }))), "audience"),
        ("unknown user", ec.sign("ec-1", &claims(json!({ "preferred_username": "mallory" }))), "not known"),
        (
            "no user claim",
            ec.sign("ec-1", &claims(json!({ "preferred_username": null }))),
            "preferred_username",
        ),
        ("signed by another key", stranger.sign("ec-1", &claims(json!({}))), "signature"),
        ("unknown key id", stranger.sign("ec-9", &claims(json!({}))), "no key"),
        ("RSA key for an EC signature", ec.sign("rsa-1", &claims(json!({}))), "no key"),
    ];
    for (what, token, reason) in refused {
        let (status, body) = whoami(&router, &token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(reason), "{what}: {message}");
    }
    // Tampered claims under a valid signature, and `alg: none`.
    let token = ec.sign("ec-1", &claims(json!({})));
    let parts: Vec<&str> = token.split('.').collect();
    let forged = b64(claims(json!({ "preferred_username": "admin" })).to_string().as_bytes());
    let (status, _) = whoami(&router, &format!("{}.{forged}.{}", parts[0], parts[2])).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "tampered claims");
    let none = b64(json!({ "alg": "none", "kid": "ec-1" }).to_string().as_bytes());
    let (status, body) = whoami(&router, &format!("{none}.{forged}.")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("not accepted"), "{body}");
    // Unknown key ids refetch the set at most every 30 s, so they cannot flood the issuer.
    assert!(fetches.load(Ordering::SeqCst) <= 2, "{} fetches", fetches.load(Ordering::SeqCst));
}
