//! Diagnostics: what is wrong in a pipeline, where, and how to fix it. Every validation step in
//! every crate reports through this one type so `sluice validate` can print them all at once.

use std::fmt;

use serde::Serialize;

/// A line and column, both 1-based, inside the text named by a diagnostic's path (the YAML file
/// for spec errors, the SQL text for SQL errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Location {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

/// One problem found in a pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// Path in the spec, e.g. `processors[1].sql` or `sources[0].options.rows_per_second`;
    /// empty for the document as a whole.
    pub path: String,
    /// What is wrong, in one sentence without a trailing period.
    pub message: String,
    /// Where inside the text at `path`, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// How to fix it, when obvious, e.g. `did you mean "price"?`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suggestion: Option<String>,
    /// The environment variable whose absence is all this diagnostic reports, if so: a
    /// process other than the one that runs the pipeline (the control plane checking a spec
    /// for its workers, which get their secrets as variables) may accept it.
    #[serde(skip)]
    pub missing_variable: Option<String>,
}

impl Diagnostic {
    /// A diagnostic at `path` with `message`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
            location: None,
            suggestion: None,
            missing_variable: None,
        }
    }

    /// Marks the diagnostic as reporting only that environment variable `name` is not set.
    pub fn missing_variable(mut self, name: impl Into<String>) -> Self {
        self.missing_variable = Some(name.into());
        self
    }

    /// Adds a line/column inside the text at the path.
    pub fn at(mut self, line: usize, column: usize) -> Self {
        self.location = Some(Location { line, column });
        self
    }

    /// Adds a suggestion.
    pub fn suggest(mut self, suggestion: impl Into<String>) -> Self {
        self.suggestion = Some(suggestion.into());
        self
    }

    /// Adds a `did you mean "x"?` suggestion if one of `candidates` is close to `name`.
    pub fn suggest_closest<'a>(self, name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Self {
        match closest(name, candidates) {
            Some(best) => self.suggest(format!("did you mean \"{best}\"?")),
            None => self,
        }
    }

    /// Prefixes the path, e.g. `options` → `sources[0].options`.
    pub fn under(mut self, prefix: &str) -> Self {
        self.path = match (prefix.is_empty(), self.path.is_empty()) {
            (true, _) => self.path,
            (false, true) => prefix.to_owned(),
            (false, false) if self.path.starts_with('[') => format!("{prefix}{}", self.path),
            (false, false) => format!("{prefix}.{}", self.path),
        };
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.path.is_empty() {
            f.write_str(&self.path)?;
            if let Some(location) = self.location {
                write!(f, ":{}:{}", location.line, location.column)?;
            }
            f.write_str(": ")?;
        } else if let Some(location) = self.location {
            write!(f, "{}:{}: ", location.line, location.column)?;
        }
        f.write_str(&self.message)?;
        if let Some(suggestion) = &self.suggestion {
            write!(f, "; {suggestion}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostic {}

/// The candidate closest to `name` by edit distance (case-insensitive), if it is close enough to
/// be a plausible typo: at most a third of the name's length, and at least one edit allowed.
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lowered = name.to_lowercase();
    let limit = (name.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|candidate| (edit_distance(&lowered, &candidate.to_lowercase()), candidate))
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// Edit distance over chars where swapping two neighbours counts as one edit (optimal string
/// alignment), so the common typo `bdis` for `bids` is as close as one wrong letter.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut before_previous: Vec<usize> = Vec::new();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != cb);
            let mut best = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
            if i > 0 && j > 0 && *ca == b[j - 1] && a[i - 1] == *cb {
                best = best.min(before_previous[j - 1] + 1);
            }
            current[j + 1] = best;
        }
        before_previous = std::mem::replace(&mut previous, current);
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(closest("prise", ["price", "bidder"]), Some("price"));
        assert_eq!(closest("Price", ["price"]), Some("price"));
        assert_eq!(closest("xyz", ["price", "bidder"]), None);
    }

    #[test]
    fn a_swap_of_neighbours_is_one_edit() {
        assert_eq!(edit_distance("bdis", "bids"), 1);
        assert_eq!(edit_distance("ab", "ba"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("abc", ""), 3);
        assert_eq!(closest("bdis", ["bids", "out"]), Some("bids"));
    }

    #[test]
    fn display_has_path_location_and_suggestion() {
        let d = Diagnostic::new("sql", "unknown column \"prise\"")
            .at(2, 8)
            .suggest_closest("prise", ["price"])
            .under("processors[1]");
        assert_eq!(d.to_string(), "processors[1].sql:2:8: unknown column \"prise\"; did you mean \"price\"?");
    }
}
