//! Flink's lookup-join spelling, `JOIN customers FOR SYSTEM_TIME AS OF o.proc_time AS c`, which
//! the SQL parser's generic dialect does not read. The clause only says "the table's current
//! rows" (a lookup always reads the table as it is when a row arrives), so [`blank_system_time`]
//! replaces it with spaces before parsing: the query means the same, and every other token
//! keeps its line and column for diagnostics.

use std::borrow::Cow;

use datafusion::sql::sqlparser::ast::Spanned;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::{Location, Token, TokenWithSpan, Tokenizer};

/// `sql` with every `FOR SYSTEM_TIME AS OF <expression>` blanked out.
pub(crate) fn blank_system_time(sql: &str) -> Cow<'_, str> {
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize_with_location() else {
        return Cow::Borrowed(sql);
    };
    let words: Vec<&TokenWithSpan> =
        tokens.iter().filter(|token| !matches!(token.token, Token::Whitespace(_))).collect();
    let mut ranges = Vec::new();
    for (index, window) in words.windows(5).enumerate() {
        let keywords = ["FOR", "SYSTEM_TIME", "AS", "OF"];
        let matches = window.iter().zip(keywords).all(|(token, keyword)| {
            matches!(&token.token, Token::Word(word) if word.quote_style.is_none()
                && word.value.eq_ignore_ascii_case(keyword))
        });
        if !matches {
            continue;
        }
        let rest: Vec<TokenWithSpan> = words[index + 4..].iter().map(|t| (*t).clone()).collect();
        let mut parser = Parser::new(&GenericDialect {}).with_tokens_with_locations(rest);
        if let Ok(expr) = parser.parse_expr() {
            ranges.push((window[0].span.start, expr.span().end));
        }
    }
    if ranges.is_empty() {
        return Cow::Borrowed(sql);
    }
    let (mut line, mut column) = (1_u64, 1_u64);
    let mut blanked = String::with_capacity(sql.len());
    for ch in sql.chars() {
        let here = Location { line, column };
        let inside = ranges.iter().any(|(start, end)| *start <= here && here < *end);
        blanked.push(if inside && ch != '\n' { ' ' } else { ch });
        if ch == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    Cow::Owned(blanked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blanks_the_clause_and_keeps_positions() {
        let sql = "SELECT * FROM o JOIN c FOR SYSTEM_TIME AS OF o.proc_time AS c2\n  ON o.k = c2.k";
        let blanked = blank_system_time(sql);
        assert_eq!(blanked.len(), sql.len());
        assert_eq!(blanked, format!("SELECT * FROM o JOIN c {} AS c2\n  ON o.k = c2.k", " ".repeat(33)));
        let plain = "SELECT a FROM t";
        assert!(matches!(blank_system_time(plain), Cow::Borrowed(_)));
    }
}
