//! The SQL text as tokens with positions, split into statements, so diagnostics can point at a
//! keyword or identifier when DataFusion does not say where a problem is.

use std::ops::Range;

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};

/// A 1-based line and column.
pub(crate) type Position = (usize, usize);

/// Tokens of the whole SQL text and, per statement, the range of its tokens.
pub(crate) struct SqlText {
    tokens: Vec<TokenWithSpan>,
    statements: Vec<Range<usize>>,
}

impl SqlText {
    /// Tokenizes `sql`; text that does not tokenize gives no positions (the parser reports it).
    pub(crate) fn new(sql: &str) -> Self {
        let tokens = Tokenizer::new(&GenericDialect {}, sql).tokenize_with_location().unwrap_or_default();
        let mut statements = Vec::new();
        let mut start = 0;
        let mut meaningful = false;
        for (index, token) in tokens.iter().enumerate() {
            match token.token {
                Token::SemiColon | Token::EOF => {
                    if meaningful {
                        statements.push(start..index);
                    }
                    start = index + 1;
                    meaningful = false;
                }
                Token::Whitespace(_) => {}
                _ => meaningful = true,
            }
        }
        if meaningful {
            statements.push(start..tokens.len());
        }
        Self { tokens, statements }
    }

    fn words(&self, statement: usize) -> impl Iterator<Item = &TokenWithSpan> {
        let range = self.statements.get(statement).cloned().unwrap_or(0..0);
        self.tokens[range].iter().filter(|token| !matches!(token.token, Token::Whitespace(_)))
    }

    /// Just past the last token that is not whitespace.
    pub(crate) fn end(&self) -> Option<Position> {
        let last = self
            .tokens
            .iter()
            .rev()
            .find(|token| !matches!(token.token, Token::Whitespace(_) | Token::EOF))?;
        Some((last.span.end.line as usize, last.span.end.column as usize))
    }

    /// Where statement `statement` (0-based) starts.
    pub(crate) fn statement_start(&self, statement: usize) -> Option<Position> {
        self.words(statement).next().map(position)
    }

    /// The first word of a statement, upper-cased, e.g. `INSERT`.
    pub(crate) fn statement_keyword(&self, statement: usize) -> Option<String> {
        match &self.words(statement).next()?.token {
            Token::Word(word) => Some(word.value.to_uppercase()),
            _ => None,
        }
    }

    /// Where the consecutive words `sequence` (case-insensitive) first occur in a statement.
    pub(crate) fn find(&self, statement: usize, sequence: &[&str]) -> Option<Position> {
        let words: Vec<&TokenWithSpan> = self.words(statement).collect();
        words
            .windows(sequence.len().max(1))
            .find(|window| {
                window.len() == sequence.len()
                    && window.iter().zip(sequence).all(|(token, expected)| match &token.token {
                        Token::Word(word) => word.value.eq_ignore_ascii_case(expected),
                        _ => false,
                    })
            })
            .map(|window| position(window[0]))
    }
}

fn position(token: &TokenWithSpan) -> Position {
    let start = token.span.start;
    (start.line as usize, start.column as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_statements_and_finds_words() {
        let text = SqlText::new("CREATE VIEW v AS SELECT a FROM t;\n  SELECT b\n  FROM v GROUP  BY b;");
        assert_eq!(text.statement_start(1), Some((2, 3)));
        assert_eq!(text.find(1, &["group", "by"]), Some((3, 10)));
        assert_eq!(text.find(0, &["group", "by"]), None);
        assert_eq!(text.statement_keyword(0).as_deref(), Some("CREATE"));
    }
}
