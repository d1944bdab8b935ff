//! What the NATS source and sink share: checked server addresses and credentials (`user` and
//! `password`, or `token`; each may be `${env:NAME}`, resolved when a worker connects and never
//! shown), and connecting.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sluice_runtime::{Error, Result};
use sluice_spec::Diagnostic;

use crate::http::secret::{Redactor, Template};
use crate::io::IoRuntime;

/// The server used when `url` is not set.
pub(crate) const DEFAULT_URL: &str = "nats://127.0.0.1:4222";
/// How long connecting and JetStream requests may take.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How a client proves who it is.
#[derive(Clone)]
enum Auth {
    None,
    UserPassword(Template, Template),
    Token(Template),
}

/// Checked connection settings; secrets are still references here.
#[derive(Clone)]
pub(crate) struct ClientSettings {
    /// The servers as written, comma-separated (never holding credentials).
    pub(crate) url: String,
    auth: Auth,
}

impl fmt::Debug for ClientSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let auth = match self.auth {
            Auth::None => "none",
            Auth::UserPassword(..) => "user and password (redacted)",
            Auth::Token(_) => "token (redacted)",
        };
        f.debug_struct("ClientSettings").field("url", &self.url).field("auth", &auth).finish()
    }
}

impl ClientSettings {
    /// Checks `url` and the credentials, reporting every problem to `diagnostics`.
    pub(crate) fn check(
        url: Option<&str>,
        user: Option<&str>,
        password: Option<&str>,
        token: Option<&str>,
        diagnostics: &mut Vec<Diagnostic>,
    ) -> Option<Self> {
        let before = diagnostics.len();
        let url = url.map_or(DEFAULT_URL, str::trim).to_owned();
        check_url(&url, diagnostics);
        let mut template = |key: &str, value: Option<&str>| {
            let value = value?;
            Template::parse(value)
                .map_err(|message| diagnostics.push(Diagnostic::new(format!("options.{key}"), message)))
                .ok()
        };
        let (user_t, password_t, token_t) =
            (template("user", user), template("password", password), template("token", token));
        let auth = match (user, password, token) {
            (None, None, None) => Some(Auth::None),
            (Some(_), Some(_), None) => user_t.zip(password_t).map(|(u, p)| Auth::UserPassword(u, p)),
            (None, None, Some(_)) => token_t.map(Auth::Token),
            (_, _, Some(_)) => {
                diagnostics.push(Diagnostic::new(
                    "options.token",
                    "set either `token` or `user` and `password`, not both",
                ));
                None
            }
            (Some(_), None, None) => {
                diagnostics.push(
                    Diagnostic::new("options.password", "`user` is set but `password` is not")
                        .suggest("set `password`, e.g. `password: ${env:NATS_PASSWORD}`"),
                );
                None
            }
            (None, Some(_), None) => {
                diagnostics.push(Diagnostic::new("options.user", "`password` is set but `user` is not"));
                None
            }
        };
        (diagnostics.len() == before).then_some(Self { url, auth: auth? })
    }

    /// Connects (failing when no server answers), with secrets resolved from the environment.
    /// Returns the client and a count of its (re)connections: it changes when the client has
    /// reconnected, after which server-side state such as ephemeral consumers may be gone.
    pub(crate) fn connect(
        &self,
        io: &IoRuntime,
        name: String,
    ) -> Result<(async_nats::Client, Arc<AtomicU64>)> {
        let mut redactor = Redactor::default();
        let env = |name: &str| std::env::var(name).ok();
        let resolve = |template: &Template, key: &str, redactor: &mut Redactor| {
            template
                .resolve(&env, redactor)
                .map_err(|message| Error::user(format!("NATS `{key}`: {message}")))
        };
        let connections = Arc::new(AtomicU64::new(0));
        let counter = connections.clone();
        let mut options = async_nats::ConnectOptions::new()
            .event_callback(move |event| {
                if matches!(event, async_nats::Event::Connected) {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                std::future::ready(())
            })
            .name(name)
            .connection_timeout(REQUEST_TIMEOUT)
            .request_timeout(Some(REQUEST_TIMEOUT));
        match &self.auth {
            Auth::None => {}
            Auth::UserPassword(user, password) => {
                let user = resolve(user, "user", &mut redactor)?;
                let password = resolve(password, "password", &mut redactor)?;
                options = options.user_and_password(user, password);
            }
            Auth::Token(token) => options = options.token(resolve(token, "token", &mut redactor)?),
        }
        let servers: Vec<String> = self.url.split(',').map(|s| s.trim().to_owned()).collect();
        let client = io.block_on(options.connect(servers))?.map_err(|error| {
            Error::user(format!(
                "cannot connect to the NATS server {} ({}); is it running, and are the credentials right?",
                self.url,
                redactor.redact(&error.to_string())
            ))
        })?;
        Ok((client, connections))
    }
}

/// Checks a comma-separated list of `nats://host:port` (or `tls://`, or `host:port`).
fn check_url(url: &str, diagnostics: &mut Vec<Diagnostic>) {
    for server in url.split(',').map(str::trim) {
        let address =
            server.strip_prefix("nats://").or_else(|| server.strip_prefix("tls://")).unwrap_or(server);
        if address.contains('@') {
            diagnostics.push(
                Diagnostic::new(
                    "options.url",
                    "credentials do not belong in the URL, where they would be shown",
                )
                .suggest("set `user` and `password` (or `token`), e.g. `password: ${env:NATS_PASSWORD}`"),
            );
            return;
        }
        let valid = address.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && !host.contains('/') && port.parse::<u16>().is_ok()
        });
        if !valid {
            diagnostics.push(
                Diagnostic::new("options.url", format!("\"{server}\" is not a NATS server address"))
                    .suggest("write e.g. `nats://127.0.0.1:4222` or `nats://n1:4222,nats://n2:4222`"),
            );
            return;
        }
    }
}

/// Checks a NATS subject (`wildcards`: whether `*` and `>` are allowed, as in a filter).
pub(crate) fn check_subject(subject: &str, wildcards: bool) -> std::result::Result<(), String> {
    if subject.is_empty() {
        return Err("the subject is empty".to_owned());
    }
    if subject.chars().any(char::is_whitespace) {
        return Err(format!("\"{subject}\" is not a valid subject: it contains white space"));
    }
    let tokens: Vec<&str> = subject.split('.').collect();
    for (index, token) in tokens.iter().enumerate() {
        if token.is_empty() {
            return Err(format!(
                "\"{subject}\" is not a valid subject: it has an empty token (`..` or a dot at an end)"
            ));
        }
        let wildcard = *token == "*" || *token == ">";
        if wildcard && !wildcards {
            return Err(format!("\"{subject}\" holds a wildcard; messages are published to one subject"));
        }
        if *token == ">" && index + 1 != tokens.len() {
            return Err(format!("\"{subject}\" is not a valid subject: `>` may only be the last token"));
        }
    }
    Ok(())
}

/// Whether some subject matches both filters.
pub(crate) fn filters_overlap(a: &str, b: &str) -> bool {
    let (a, b): (Vec<&str>, Vec<&str>) = (a.split('.').collect(), b.split('.').collect());
    let mut index = 0;
    loop {
        match (a.get(index), b.get(index)) {
            (None, None) => return true,
            (Some(&">"), Some(_)) | (Some(_), Some(&">")) => return true,
            (None, Some(_)) | (Some(_), None) => return false,
            (Some(x), Some(y)) if *x != "*" && *y != "*" && x != y => return false,
            _ => index += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_filters_are_found() {
        let cases = [
            ("a.b", "a.b", true),
            ("a.b", "a.c", false),
            ("a.*", "a.b", true),
            ("a.*", "a.b.c", false),
            ("a.>", "a.b.c", true),
            ("a.>", "a", false),
            ("*.b", "a.*", true),
            ("x.>", "y.>", false),
            (">", "q", true),
        ];
        for (a, b, overlap) in cases {
            assert_eq!(filters_overlap(a, b), overlap, "{a} / {b}");
            assert_eq!(filters_overlap(b, a), overlap, "{b} / {a}");
        }
    }

    #[test]
    fn subjects_are_checked() {
        assert!(check_subject("orders.eu.new", false).is_ok());
        assert!(check_subject("orders.*.>", true).is_ok());
        assert_eq!(
            check_subject("orders.*", false).unwrap_err(),
            "\"orders.*\" holds a wildcard; messages are published to one subject"
        );
        assert_eq!(
            check_subject("a..b", true).unwrap_err(),
            "\"a..b\" is not a valid subject: it has an empty token (`..` or a dot at an end)"
        );
        assert_eq!(
            check_subject("a.>.b", true).unwrap_err(),
            "\"a.>.b\" is not a valid subject: `>` may only be the last token"
        );
    }

    #[test]
    fn credentials_are_redacted_from_debug_output() {
        let mut diagnostics = Vec::new();
        let settings = ClientSettings::check(
            None,
            Some("app"),
            Some("${env:SLUICE_TEST_NATS_PASSWORD}"),
            None,
            &mut diagnostics,
        )
        .unwrap();
        let shown = format!("{settings:?}");
        assert!(shown.contains("redacted") && !shown.contains("SLUICE_TEST"), "{shown}");
        assert_eq!(settings.url, DEFAULT_URL);
    }
}
