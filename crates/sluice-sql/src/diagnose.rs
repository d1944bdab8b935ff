//! Turns DataFusion's errors into [`Diagnostic`]s a non-expert can act on: no error-kind
//! prefixes, no Rust debug output, a position inside the SQL text, and a suggestion when a name
//! is a likely typo.

use datafusion::common::{DataFusionError, SchemaError};
use datafusion::sql::sqlparser::parser::ParserError;
use sluice_spec::Diagnostic;

use crate::text::{Position, SqlText};

/// What the planner knows about where an error happened.
pub(crate) struct Context<'a> {
    pub(crate) text: &'a SqlText,
    /// Index of the statement being planned.
    pub(crate) statement: usize,
    /// Names of the processor's inputs, as the SQL may spell them.
    pub(crate) tables: &'a [String],
}

/// A diagnostic for a planning error.
pub(crate) fn planning_error(error: &DataFusionError, context: &Context<'_>) -> Diagnostic {
    let root = error.find_root();
    let span = error
        .diagnostic()
        .and_then(|diagnostic| diagnostic.span)
        .filter(|span| span.start.line > 0)
        .map(|span| (span.start.line as usize, span.start.column as usize));
    if let Some((name, suggestion)) = unknown_function(error) {
        let diagnostic = located(Diagnostic::new("", format!("unknown function \"{name}\"")), span);
        return match suggestion {
            Some(suggestion) => diagnostic.suggest(format!("did you mean \"{suggestion}\"?")),
            None => diagnostic,
        };
    }
    let diagnostic = match root {
        DataFusionError::SchemaError(inner, _) => match inner.as_ref() {
            SchemaError::FieldNotFound { field, valid_fields } => {
                let mut names: Vec<&str> = valid_fields.iter().map(|c| c.name.as_str()).collect();
                names.dedup();
                let shown = match &field.relation {
                    Some(relation) => format!("{relation}.{}", field.name),
                    None => field.name.clone(),
                };
                let at = span.or_else(|| context.text.find(context.statement, &[&field.name]));
                return located(Diagnostic::new("", format!("unknown column \"{shown}\"")), at)
                    .suggest_closest(&field.name, names);
            }
            _ => Diagnostic::new("", clean(&root.message())),
        },
        DataFusionError::SQL(parser_error, _) => {
            return syntax_error(parser_error, context.text.end());
        }
        _ => match unknown_table(error) {
            Some(table) => {
                let last = table.rsplit('.').next().unwrap_or(&table).to_owned();
                let at = span.or_else(|| context.text.find(context.statement, &[&last]));
                let inputs = context.tables.join(", ");
                let message = format!(
                    "unknown table \"{table}\": a SQL processor reads the tables named in its \
                     `inputs` ({inputs}) and the views it creates"
                );
                return located(Diagnostic::new("", message), at)
                    .suggest_closest(&table, context.tables.iter().map(String::as_str));
            }
            None => Diagnostic::new("", clean(&root.message())),
        },
    };
    let span = span.or_else(|| {
        let filter = diagnostic.message.starts_with("Cannot create filter");
        if filter { context.text.find(context.statement, &["WHERE"]) } else { None }
    });
    located(diagnostic, span)
}

/// A diagnostic for text that does not parse as SQL.
/// `end` is where the text ends, for errors at the end of input (which have no position).
pub(crate) fn syntax_error(error: &ParserError, end: Option<Position>) -> Diagnostic {
    let raw = match error {
        ParserError::ParserError(message) | ParserError::TokenizerError(message) => message.clone(),
        ParserError::RecursionLimitExceeded => {
            return Diagnostic::new("", "syntax error: the query is nested too deeply");
        }
    };
    let (text, at) = split_position(&raw);
    let at = at.or(if text.ends_with("found: EOF") { end } else { None });
    let message = match text.strip_prefix("Expected: ") {
        Some(rest) => match rest.split_once(", found: ") {
            Some((expected, found)) => format!("syntax error: expected {expected}, found {found}"),
            None => format!("syntax error: expected {rest}"),
        },
        None => format!("syntax error: {}", lowercase_first(text)),
    };
    located(Diagnostic::new("", message), at)
}

/// Cleans a DataFusion message for a user: drops error-kind prefixes, backtraces, the "file a
/// bug" boilerplate and line breaks.
pub(crate) fn clean(message: &str) -> String {
    let mut text = message.split(DataFusionError::BACK_TRACE_SEP).next().unwrap_or(message);
    if let Some((before, _)) = text.split_once(".\nThis issue was likely caused by a bug") {
        text = before;
    }
    const PREFIXES: [&str; 9] = [
        "Error during planning: ",
        "Schema error: ",
        "Execution error: ",
        "Arrow error: ",
        "External error: ",
        "Internal error: ",
        "This feature is not implemented: ",
        "Invalid argument error: ",
        "Optimizer rule ",
    ];
    let mut text = text.trim().to_owned();
    while let Some(prefix) = PREFIXES.iter().find(|prefix| text.starts_with(**prefix)) {
        text = text[prefix.len()..].to_owned();
    }
    let text = without_debug_output(&text.split_whitespace().collect::<Vec<_>>().join(" "));
    text.trim_end_matches('.').trim_end().to_owned()
}

/// Cuts a message where Rust debug output of a syntax tree starts (`... Substring { expr: ...`).
fn without_debug_output(text: &str) -> String {
    let words: Vec<&str> = text.split(' ').collect();
    let debug_start = words
        .windows(2)
        .position(|pair| pair[1] == "{" && pair[0].chars().next().is_some_and(char::is_uppercase));
    match debug_start {
        Some(0) | None => text.to_owned(),
        Some(index) => words[..index].join(" "),
    }
}

/// The table name of a "table not found" error, if that is what `error` is.
fn unknown_table(error: &DataFusionError) -> Option<String> {
    let message = error.diagnostic()?.message.as_str();
    let name = message.strip_prefix("table '")?.strip_suffix("' not found")?;
    Some(name.to_owned())
}

/// The name of an unknown function, and DataFusion's guess of the intended one.
fn unknown_function(error: &DataFusionError) -> Option<(String, Option<String>)> {
    let diagnostic = error.diagnostic()?;
    let name = diagnostic.message.strip_prefix("Invalid function '")?.strip_suffix('\'')?;
    let suggestion = diagnostic.notes.iter().find_map(|note| {
        let guess = note.message.strip_prefix("Possible function '")?.strip_suffix('\'')?;
        Some(guess.to_owned())
    });
    Some((name.to_owned(), suggestion))
}

/// Splits ` at Line: L, Column: C` off a sqlparser message.
fn split_position(message: &str) -> (&str, Option<Position>) {
    let Some((text, position)) = message.rsplit_once(" at Line: ") else {
        return (message, None);
    };
    let mut numbers = position.split(", Column: ").map(|n| n.trim().parse::<usize>());
    match (numbers.next(), numbers.next()) {
        (Some(Ok(line)), Some(Ok(column))) => (text, Some((line, column))),
        _ => (message, None),
    }
}

fn located(diagnostic: Diagnostic, at: Option<Position>) -> Diagnostic {
    match at {
        Some((line, column)) => diagnostic.at(line, column),
        None => diagnostic,
    }
}

fn lowercase_first(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_prefixes_and_boilerplate() {
        assert_eq!(
            clean("Error during planning: Cannot coerce Int64 + Utf8.\n\tCandidates: x"),
            "Cannot coerce Int64 + Utf8. Candidates: x"
        );
        assert_eq!(clean("Arrow error: Cast error: bad value"), "Cast error: bad value");
    }

    #[test]
    fn syntax_errors_say_what_was_expected_and_where() {
        let error =
            ParserError::ParserError("Expected: an expression, found: FROM at Line: 2, Column: 8".into());
        let diagnostic = syntax_error(&error, None);
        assert_eq!(diagnostic.message, "syntax error: expected an expression, found FROM");
        assert_eq!(diagnostic.location.map(|l| (l.line, l.column)), Some((2, 8)));
    }
}
