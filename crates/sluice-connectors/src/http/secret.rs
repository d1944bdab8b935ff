//! Option values that may hold secrets: `${env:NAME}` references, resolved from the environment
//! when a writer opens (the secrets store of the control plane will be a second kind of
//! reference), and the [`Redactor`] that keeps their values out of every message, log line and
//! dead letter.

use std::fmt;

/// A string option with `${env:NAME}` references, as written in the spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Env(String),
}

impl Template {
    /// Parses `text`; a `${` that does not start a well-formed `${env:NAME}` is an error saying
    /// how to write one.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            if start > 0 {
                parts.push(Part::Literal(rest[..start].to_owned()));
            }
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                return Err(format!("unclosed \"${{\" in \"{text}\"; write a reference as ${{env:NAME}}"));
            };
            let reference = &after[..end];
            let Some(name) = reference.strip_prefix("env:") else {
                return Err(format!(
                    "\"${{{reference}}}\" is not a reference Sluice knows; write ${{env:NAME}} to use the \
                     environment variable NAME"
                ));
            };
            if !is_variable_name(name) {
                return Err(format!(
                    "\"{name}\" in \"${{{reference}}}\" is not an environment variable name (letters, digits \
                     and '_', not starting with a digit)"
                ));
            }
            parts.push(Part::Env(name.to_owned()));
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_owned()));
        }
        Ok(Self { parts })
    }

    /// Whether the template references any secret.
    pub fn has_references(&self) -> bool {
        self.parts.iter().any(|part| matches!(part, Part::Env(_)))
    }

    /// The template with every reference replaced by `placeholder`, e.g. to check the shape of
    /// a URL before its secrets are known.
    pub fn with_placeholders(&self, placeholder: &str) -> String {
        self.parts
            .iter()
            .map(|part| match part {
                Part::Literal(text) => text.as_str(),
                Part::Env(_) => placeholder,
            })
            .collect()
    }

    /// The value, with references resolved through `lookup` (the environment, in production);
    /// every resolved value is added to `redactor`. Errors name the variable, never a value.
    pub fn resolve(
        &self,
        lookup: &dyn Fn(&str) -> Option<String>,
        redactor: &mut Redactor,
    ) -> Result<String, String> {
        let mut value = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => value.push_str(text),
                Part::Env(name) => {
                    let Some(secret) = lookup(name) else {
                        return Err(format!(
                            "environment variable {name} is not set; export it before starting the pipeline"
                        ));
                    };
                    redactor.add(&secret);
                    value.push_str(&secret);
                }
            }
        }
        Ok(value)
    }
}

fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Secret values to hide: [`Redactor::redact`] replaces each occurrence with `***`. Its Debug
/// output says how many secrets it holds, never what they are.
#[derive(Clone, Default)]
pub(crate) struct Redactor {
    /// Longest first, so that a secret containing another is hidden whole.
    secrets: Vec<String>,
}

impl Redactor {
    /// Hides `secret` from now on (empty values hide nothing and are ignored).
    pub fn add(&mut self, secret: &str) {
        if secret.is_empty() || self.secrets.iter().any(|known| known == secret) {
            return;
        }
        self.secrets.push(secret.to_owned());
        self.secrets.sort_by_key(|known| std::cmp::Reverse(known.len()));
    }

    /// `text` with every secret replaced by `***`.
    pub fn redact(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for secret in &self.secrets {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), "***");
            }
        }
        text
    }
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Redactor({} secrets)", self.secrets.len())
    }
}

/// `url` without a `user:password@` part, which must not be shown.
pub(crate) fn without_userinfo(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else { return url.to_owned() };
    let authority_start = scheme_end + 3;
    let authority_end =
        url[authority_start..].find(['/', '?', '#']).map_or(url.len(), |end| authority_start + end);
    match url[authority_start..authority_end].rfind('@') {
        Some(at) => format!("{}{}", &url[..authority_start], &url[authority_start + at + 1..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "TOKEN" => Some("s3cr3t".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn references_resolve_and_their_values_are_redacted() {
        let template = Template::parse("Bearer ${env:TOKEN}!").unwrap();
        assert!(template.has_references());
        assert_eq!(template.with_placeholders("x"), "Bearer x!");
        let mut redactor = Redactor::default();
        let value = template.resolve(&env, &mut redactor).unwrap();
        assert_eq!(value, "Bearer s3cr3t!");
        assert_eq!(
            redactor.redact(&format!("server said: {value} / {value}")),
            "server said: Bearer ***! / Bearer ***!"
        );
        assert!(!format!("{redactor:?}").contains("s3cr3t"));
    }

    #[test]
    fn literals_are_not_references() {
        let template = Template::parse("application/json").unwrap();
        assert!(!template.has_references());
        assert_eq!(template.resolve(&env, &mut Redactor::default()).unwrap(), "application/json");
    }

    #[test]
    fn malformed_references_say_how_to_write_one() {
        let cases = [
            (
                "${TOKEN}",
                "\"${TOKEN}\" is not a reference Sluice knows; write ${env:NAME} to use the environment variable NAME",
            ),
            ("a ${env:TOKEN", "unclosed \"${\" in \"a ${env:TOKEN\"; write a reference as ${env:NAME}"),
            (
                "${env:1X}",
                "\"1X\" in \"${env:1X}\" is not an environment variable name (letters, digits and '_', not starting with a digit)",
            ),
        ];
        for (text, message) in cases {
            assert_eq!(Template::parse(text).unwrap_err(), message, "{text}");
        }
    }

    #[test]
    fn a_missing_variable_is_named_and_empty_values_redact_nothing() {
        let mut redactor = Redactor::default();
        let missing = Template::parse("${env:NOPE}").unwrap().resolve(&env, &mut redactor);
        assert_eq!(
            missing.unwrap_err(),
            "environment variable NOPE is not set; export it before starting the pipeline"
        );
        Template::parse("${env:EMPTY}").unwrap().resolve(&env, &mut redactor).unwrap();
        assert_eq!(redactor.redact("abc"), "abc");
    }

    #[test]
    fn the_longest_secret_is_hidden_whole() {
        let mut redactor = Redactor::default();
        redactor.add("abc");
        redactor.add("abcdef");
        assert_eq!(redactor.redact("xabcdefx abc"), "x***x ***");
    }

    #[test]
    fn userinfo_is_removed_from_urls() {
        assert_eq!(without_userinfo("https://u:p@h.io/a@b?c=d"), "https://h.io/a@b?c=d");
        assert_eq!(without_userinfo("http://h.io:80/x"), "http://h.io:80/x");
        assert_eq!(without_userinfo("not a url"), "not a url");
    }
}
