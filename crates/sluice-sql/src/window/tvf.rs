//! Flink's windowing table-valued functions (`TUMBLE`, `HOP`, `SESSION`) in SQL text.
//!
//! The SQL parser cannot read `TUMBLE(TABLE bid, DESCRIPTOR(ts), INTERVAL '10' SECOND)` (a
//! `TABLE` argument, `DESCRIPTOR`), so [`rewrite`] finds each call in the token stream before
//! parsing, with or without the outer `TABLE( ... )`, and replaces it in place with the name of
//! a table, `__sluice_window_<n>."<source>"`, padded with spaces so that every other token keeps
//! its line and column. [`WindowTvf::register`] then registers that table in the session: the
//! source relation's columns plus `window_start` and `window_end` (typed like the time column;
//! `Timestamp(ms)` for an `Int64` millisecond column). Since the table's last name part is the
//! source's, `bid.price` still resolves, and an alias written after the call applies as usual.
//!
//! For `TUMBLE` the window columns are computed per row, so the table may be read by any
//! stateless query (and by joins). `HOP` and `SESSION` cannot be computed per row (a row may
//! belong to several windows; a session depends on other rows), so their table holds NULL
//! placeholders, and only a processor that assigns windows itself may read it:
//! [`WindowTvf::computes_columns`] says which.
//!
//! Use from a planner: call [`rewrite`] on the SQL text, parse the result, and before planning
//! statement `i` call [`WindowTvf::register`] for every call with `statement == i`. The table
//! is a view, which DataFusion inlines while planning: in the logical plan, the call is the
//! `LogicalPlan::SubqueryAlias` whose alias equals [`WindowTvf::table`] ([`WindowTvf::reads`]
//! finds it). Event times come from [`event_times`], windows from [`WindowKind`].

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, Int64Type, TimeUnit, TimestampMicrosecondType};
use arrow::datatypes::{TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType};
use datafusion::catalog::{MemorySchemaProvider, TableProvider, view::ViewTable};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{Result as DfResult, TableReference};
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};
use futures::executor::block_on;
use sluice_spec::Diagnostic;

use crate::diagnose::{Context, clean, planning_error};

/// Prefix of the schema that holds the table standing for one window call.
const TABLE_SCHEMA_PREFIX: &str = "__sluice_window_";

/// Which windows a call assigns, with lengths in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WindowKind {
    /// Fixed, non-overlapping windows `[k * size, (k + 1) * size)`.
    Tumble {
        /// Window length.
        size: i64,
    },
    /// Windows of length `size` starting every `slide`; a row is in `size / slide` of them.
    Hop {
        /// Distance between window starts.
        slide: i64,
        /// Window length.
        size: i64,
    },
    /// Per partition, rows closer than `gap` in event time form one window
    /// `[first, last + gap)`.
    Session {
        /// Largest inactivity inside one session.
        gap: i64,
        /// `PARTITION BY` columns as written (normalized like SQL identifiers).
        partition_by: Vec<String>,
    },
}

impl WindowKind {
    /// The SQL name of the function.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            WindowKind::Tumble { .. } => "TUMBLE",
            WindowKind::Hop { .. } => "HOP",
            WindowKind::Session { .. } => "SESSION",
        }
    }

    /// Start of the last fixed window (TUMBLE or HOP) containing event time `time`; windows then
    /// start every [`WindowKind::step`] before it, [`WindowKind::windows_per_row`] of them.
    /// For SESSION: `time` itself.
    pub(crate) fn last_start(&self, time: i64) -> i64 {
        match self {
            WindowKind::Tumble { size } => time - time.rem_euclid(*size),
            WindowKind::Hop { slide, .. } => time - time.rem_euclid(*slide),
            WindowKind::Session { .. } => time,
        }
    }

    /// Distance between the starts of consecutive windows.
    pub(crate) fn step(&self) -> i64 {
        match self {
            WindowKind::Tumble { size } => *size,
            WindowKind::Hop { slide, .. } => *slide,
            WindowKind::Session { gap, .. } => *gap,
        }
    }

    /// Window length (for SESSION: the length of a session of one row).
    pub(crate) fn size(&self) -> i64 {
        match self {
            WindowKind::Tumble { size } | WindowKind::Hop { size, .. } => *size,
            WindowKind::Session { gap, .. } => *gap,
        }
    }

    /// How many fixed windows contain each row: 1 for TUMBLE, `ceil(size / slide)` for HOP.
    pub(crate) fn windows_per_row(&self) -> i64 {
        match self {
            WindowKind::Hop { slide, size } => (size + slide - 1) / slide,
            _ => 1,
        }
    }

    /// Every `(start, end)` of the fixed windows containing `time`, latest first.
    pub(crate) fn windows_of(&self, time: i64) -> impl Iterator<Item = (i64, i64)> + use<> {
        let (last, step, size) = (self.last_start(time), self.step(), self.size());
        (0..self.windows_per_row())
            .map(move |k| last - k * step)
            .filter(move |start| time < start + size)
            .map(move |start| (start, start + size))
    }
}

/// How the time column stores event time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TimeColumn {
    /// A timestamp of this unit and time zone.
    Timestamp(TimeUnit, Option<Arc<str>>),
    /// Whole milliseconds since the Unix epoch.
    Millis,
}

impl TimeColumn {
    fn of(data_type: &DataType) -> Option<Self> {
        match data_type {
            DataType::Timestamp(unit, zone) => Some(TimeColumn::Timestamp(*unit, zone.clone())),
            DataType::Int64 => Some(TimeColumn::Millis),
            _ => None,
        }
    }

    /// The type of `window_start` and `window_end`.
    pub(crate) fn window_type(&self) -> DataType {
        match self {
            TimeColumn::Timestamp(unit, zone) => DataType::Timestamp(*unit, zone.clone()),
            TimeColumn::Millis => DataType::Timestamp(TimeUnit::Millisecond, None),
        }
    }

    /// Units of the window columns per millisecond (for sub-millisecond units), and
    /// milliseconds per unit for seconds (as a negative power, see [`TimeColumn::to_native`]).
    fn native_per_milli(&self) -> i64 {
        match self {
            TimeColumn::Timestamp(TimeUnit::Microsecond, _) => 1_000,
            TimeColumn::Timestamp(TimeUnit::Nanosecond, _) => 1_000_000,
            _ => 1,
        }
    }

    /// A millisecond event time in the unit of the window columns.
    pub(crate) fn to_native(&self, millis: i64) -> i64 {
        match self {
            TimeColumn::Timestamp(TimeUnit::Second, _) => millis.div_euclid(1_000),
            _ => millis.saturating_mul(self.native_per_milli()),
        }
    }
}

/// One windowing call found in the SQL text.
#[derive(Debug, Clone)]
pub(crate) struct WindowTvf {
    /// The table that stands for the call in the rewritten SQL.
    pub(crate) table: TableReference,
    /// Index of the statement the call is in.
    pub(crate) statement: usize,
    /// The relation the call reads, as written (`bid`, `nx.bid`, a view).
    pub(crate) source: String,
    /// The time column named by `DESCRIPTOR(...)`, as written.
    pub(crate) descriptor: String,
    /// The windows.
    pub(crate) kind: WindowKind,
    /// Where the call starts in the SQL text (1-based line and column).
    pub(crate) position: (usize, usize),
    /// Set by [`WindowTvf::register`]: the time column's exact name in the source.
    pub(crate) time_column: String,
    /// Set by [`WindowTvf::register`]: how the time column stores time.
    pub(crate) time: TimeColumn,
}

/// The SQL text with every window call replaced by its table name, and the calls found.
/// Errors say what is wrong with a call's arguments and show the expected form.
pub(crate) fn rewrite(sql: &str) -> Result<(String, Vec<WindowTvf>), Diagnostic> {
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize_with_location() else {
        // The parser reports text that does not tokenize.
        return Ok((sql.to_owned(), Vec::new()));
    };
    let words: Vec<&TokenWithSpan> =
        tokens.iter().filter(|t| !matches!(t.token, Token::Whitespace(_) | Token::EOF)).collect();
    let lines = LineOffsets::new(sql);
    let mut text = sql.to_owned();
    let mut calls = Vec::new();
    let mut statement = 0;
    let mut index = 0;
    while index < words.len() {
        if words[index].token == Token::SemiColon {
            statement += 1;
        }
        let Some(kind) = kind_at(&words, index) else {
            index += 1;
            continue;
        };
        let outer =
            index >= 2 && words[index - 1].token == Token::LParen && is_word(words[index - 2], "TABLE");
        let first = if outer { index - 2 } else { index };
        let mut call = CallParser { words: &words, next: index + 2, kind };
        let (source, descriptor, kind, last) = call.parse(outer)?;
        let start = lines.offset(words[first].span.start.line, words[first].span.start.column);
        let end = lines.offset(words[last].span.end.line, words[last].span.end.column);
        let table_name = normalize(&table_name_of(&source));
        let schema = format!("{TABLE_SCHEMA_PREFIX}{}", calls.len());
        let name = format!("{schema}.\"{}\"", table_name.replace('"', "\"\""));
        let (Some(start), Some(end)) = (start, end) else {
            return Err(Diagnostic::new("", "internal error: a window call's position is outside the SQL"));
        };
        text.replace_range(start..end, &padded(&name, &sql[start..end]));
        calls.push(WindowTvf {
            table: TableReference::partial(schema, table_name),
            statement,
            source,
            descriptor,
            kind,
            position: (words[first].span.start.line as usize, words[first].span.start.column as usize),
            time_column: String::new(),
            time: TimeColumn::Millis,
        });
        index = last + 1;
    }
    // The replacements keep every byte offset, so later calls' offsets stay valid.
    Ok((text, calls))
}

impl WindowTvf {
    /// The call as the planner's caller sees it.
    pub(crate) fn usage(&self) -> crate::WindowUse {
        let function = match self.kind {
            WindowKind::Tumble { .. } => "TUMBLE",
            WindowKind::Hop { .. } => "HOP",
            WindowKind::Session { .. } => "SESSION",
        };
        crate::WindowUse { function, line: self.position.0, column: self.position.1 }
    }

    /// Whether the table computes `window_start` and `window_end` per row (TUMBLE), rather than
    /// holding NULL placeholders that only a window-assigning processor may read.
    pub(crate) fn computes_columns(&self) -> bool {
        matches!(self.kind, WindowKind::Tumble { .. })
    }

    /// Registers the call's table in `context`, reading the source relation as registered
    /// there (an input or an earlier view); fills in [`WindowTvf::time_column`] and
    /// [`WindowTvf::time`].
    pub(crate) fn register(&mut self, context: &SessionContext, at: &Context<'_>) -> Result<(), Diagnostic> {
        let here = |message: String| Diagnostic::new("", message).at(self.position.0, self.position.1);
        let state = context.state();
        let source = block_on(state.create_logical_plan(&format!("SELECT * FROM {}", self.source)))
            .map_err(|error| planning_error(&error, at))?;
        let schema = source.schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        let wanted = normalize(&self.descriptor);
        let found = names.iter().find(|n| **n == wanted).or_else(|| {
            let mut folded = names.iter().filter(|n| n.eq_ignore_ascii_case(&wanted));
            match (folded.next(), folded.next()) {
                (Some(only), None) => Some(only),
                _ => None,
            }
        });
        let Some(column) = found else {
            let message = format!(
                "unknown time column \"{}\" in DESCRIPTOR of {}: {} has no such column",
                self.descriptor,
                self.kind.name(),
                self.source
            );
            return Err(here(message).suggest_closest(&wanted, names.iter().copied()));
        };
        let field = schema.field_with_unqualified_name(column).map_err(|e| here(clean(&e.message())))?;
        let Some(time) = TimeColumn::of(field.data_type()) else {
            return Err(here(format!(
                "the time column \"{column}\" of {} is {}; it must be a timestamp or whole \
                 milliseconds since the Unix epoch (BIGINT)",
                self.kind.name(),
                field.data_type()
            ))
            .suggest(format!("convert it in a view first, e.g. CAST({column} AS TIMESTAMP)")));
        };
        for name in ["window_start", "window_end"] {
            if names.contains(&name) {
                return Err(here(format!(
                    "{} adds a column \"{name}\", but {} already has one; rename it in a view first",
                    self.kind.name(),
                    self.source
                )));
            }
        }
        if let WindowKind::Session { partition_by, .. } = &self.kind {
            for key in partition_by {
                if schema.field_with_unqualified_name(&normalize(key)).is_err() {
                    return Err(here(format!("unknown PARTITION BY column \"{key}\" of SESSION"))
                        .suggest_closest(&normalize(key), names.iter().copied()));
                }
            }
        }
        self.time_column = (*column).to_owned();
        self.time = time;
        let view = block_on(state.create_logical_plan(&self.view_sql())).map_err(|error| {
            here(format!("internal error planning {}: {}", self.kind.name(), clean(&error.message())))
        })?;
        let register = || -> DfResult<()> {
            if let (Some(schema), Some(catalog)) = (self.table.schema(), context.catalog("datafusion"))
                && catalog.schema(schema).is_none()
            {
                catalog.register_schema(schema, Arc::new(MemorySchemaProvider::new()))?;
            }
            let table: Arc<dyn TableProvider> = Arc::new(ViewTable::new(view, None));
            context.register_table(self.table.clone(), table).map(|_| ())
        };
        register().map_err(|error| here(format!("internal error: {}", clean(&error.message()))))
    }

    /// The SQL of the table: every source column, then `window_start` and `window_end`.
    fn view_sql(&self) -> String {
        let window_type = self.time.window_type();
        let (start, end) = match self.kind {
            WindowKind::Tumble { size } => {
                let size = self.time.to_native(size);
                let time = format!("\"{}\"", self.time_column.replace('"', "\"\""));
                let native = match self.time {
                    TimeColumn::Millis => time,
                    TimeColumn::Timestamp(..) => format!("arrow_cast({time}, 'Int64')"),
                };
                let start = format!("({native} - ((({native} % {size}) + {size}) % {size}))");
                (
                    format!("arrow_cast({start}, '{window_type}')"),
                    format!("arrow_cast({start} + {size}, '{window_type}')"),
                )
            }
            _ => (format!("arrow_cast(NULL, '{window_type}')"), format!("arrow_cast(NULL, '{window_type}')")),
        };
        format!("SELECT *, {start} AS window_start, {end} AS window_end FROM {}", self.source)
    }

    /// Whether `plan` reads this call (holds its inlined table somewhere).
    pub(crate) fn reads(&self, plan: &LogicalPlan) -> bool {
        let mut found = false;
        let _ = plan.apply(|node| {
            found = matches!(node, LogicalPlan::SubqueryAlias(alias) if alias.alias == self.table);
            Ok(if found { TreeNodeRecursion::Stop } else { TreeNodeRecursion::Continue })
        });
        found
    }
}

/// Event times of a timestamp or `Int64` millisecond column, in milliseconds.
pub(crate) fn event_times(times: &ArrayRef) -> DfResult<Vec<Option<i64>>> {
    fn collect<T: arrow::datatypes::ArrowPrimitiveType<Native = i64>>(
        array: &dyn Array,
        to_millis: impl Fn(i64) -> i64,
    ) -> Vec<Option<i64>> {
        array.as_primitive::<T>().iter().map(|v| v.map(&to_millis)).collect()
    }
    Ok(match times.data_type() {
        DataType::Int64 => collect::<Int64Type>(times, |v| v),
        DataType::Timestamp(TimeUnit::Second, _) => {
            collect::<TimestampSecondType>(times, |v| v.saturating_mul(1_000))
        }
        DataType::Timestamp(TimeUnit::Millisecond, _) => collect::<TimestampMillisecondType>(times, |v| v),
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            collect::<TimestampMicrosecondType>(times, |v| v.div_euclid(1_000))
        }
        DataType::Timestamp(TimeUnit::Nanosecond, _) => {
            collect::<TimestampNanosecondType>(times, |v| v.div_euclid(1_000_000))
        }
        other => {
            return Err(datafusion::common::DataFusionError::Plan(format!(
                "a time column must be a timestamp or BIGINT milliseconds, not {other}"
            )));
        }
    })
}

/// The window function named at `index`, if a call starts there (`NAME ( TABLE`).
fn kind_at(words: &[&TokenWithSpan], index: usize) -> Option<WindowKind> {
    let kind = match &words[index].token {
        Token::Word(word) if word.quote_style.is_none() => match word.value.to_uppercase().as_str() {
            "TUMBLE" => WindowKind::Tumble { size: 0 },
            "HOP" => WindowKind::Hop { slide: 0, size: 0 },
            "SESSION" => WindowKind::Session { gap: 0, partition_by: Vec::new() },
            _ => return None,
        },
        _ => return None,
    };
    let opens = words.get(index + 1).is_some_and(|t| t.token == Token::LParen);
    let table = words.get(index + 2).is_some_and(|t| is_word(t, "TABLE"));
    (opens && table).then_some(kind)
}

fn is_word(token: &TokenWithSpan, keyword: &str) -> bool {
    matches!(&token.token, Token::Word(word) if word.quote_style.is_none() && word.value.eq_ignore_ascii_case(keyword))
}

/// Reads the arguments of one call, starting after `NAME (`.
struct CallParser<'a> {
    words: &'a [&'a TokenWithSpan],
    next: usize,
    kind: WindowKind,
}

impl CallParser<'_> {
    fn usage(&self) -> &'static str {
        match self.kind {
            WindowKind::Tumble { .. } => "TUMBLE(TABLE t, DESCRIPTOR(ts), INTERVAL '10' SECOND)",
            WindowKind::Hop { .. } => {
                "HOP(TABLE t, DESCRIPTOR(ts), INTERVAL '5' SECOND, INTERVAL '10' SECOND) (slide, then size)"
            }
            WindowKind::Session { .. } => {
                "SESSION(TABLE t PARTITION BY k, DESCRIPTOR(ts), INTERVAL '30' SECOND)"
            }
        }
    }

    fn error(&self, expected: &str) -> Diagnostic {
        let (found, at) = match self.words.get(self.next) {
            Some(token) => (token.token.to_string(), Some(token.span.start)),
            None => ("the end of the SQL".to_owned(), self.words.last().map(|t| t.span.end)),
        };
        let diagnostic =
            Diagnostic::new("", format!("{}: expected {expected}, found {found}", self.kind.name()))
                .suggest(format!("write {}", self.usage()));
        match at {
            Some(at) => diagnostic.at(at.line as usize, at.column as usize),
            None => diagnostic,
        }
    }

    fn peek(&self) -> Option<&Token> {
        self.words.get(self.next).map(|t| &t.token)
    }

    fn expect(&mut self, token: Token, expected: &str) -> Result<(), Diagnostic> {
        if self.peek() == Some(&token) {
            self.next += 1;
            Ok(())
        } else {
            Err(self.error(expected))
        }
    }

    fn keyword(&mut self, keyword: &str) -> Result<(), Diagnostic> {
        if self.words.get(self.next).is_some_and(|t| is_word(t, keyword)) {
            self.next += 1;
            Ok(())
        } else {
            Err(self.error(keyword))
        }
    }

    /// An identifier as SQL text (quotes kept).
    fn identifier(&mut self, what: &str) -> Result<String, Diagnostic> {
        let text = match self.peek() {
            Some(Token::Word(word)) => match word.quote_style {
                Some(quote) => format!("{quote}{}{quote}", word.value),
                None => word.value.clone(),
            },
            _ => return Err(self.error(what)),
        };
        self.next += 1;
        Ok(text)
    }

    fn interval(&mut self, what: &str) -> Result<i64, Diagnostic> {
        self.expect(Token::Comma, &format!("a comma and the {what}"))?;
        let at = self.next;
        self.keyword("INTERVAL").map_err(|_| self.error(&format!("the {what} as INTERVAL '10' SECOND")))?;
        let value = match self.peek() {
            Some(Token::SingleQuotedString(text)) | Some(Token::Number(text, _)) => text.clone(),
            _ => return Err(self.error(&format!("the {what} as INTERVAL '10' SECOND"))),
        };
        self.next += 1;
        let unit = match self.peek() {
            Some(Token::Word(word)) if word.quote_style.is_none() => word.value.clone(),
            _ => String::new(),
        };
        if !unit.is_empty() {
            self.next += 1;
        }
        let position = self.words[at].span.start;
        let located = |message: String| {
            Diagnostic::new("", message)
                .at(position.line as usize, position.column as usize)
                .suggest(format!("write {}", self.usage()))
        };
        let duration = sluice_spec::parse_duration(&format!("{value} {unit}"))
            .map_err(|reason| located(format!("invalid {what} of {}: {reason}", self.kind.name())))?;
        let millis = i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
        if millis <= 0 {
            return Err(located(format!(
                "the {what} of {} must be at least one millisecond",
                self.kind.name()
            )));
        }
        Ok(millis)
    }

    /// Parses the arguments and the closing parentheses; returns the source, the descriptor,
    /// the kind with its lengths and the index of the call's last token.
    fn parse(&mut self, outer: bool) -> Result<(String, String, WindowKind, usize), Diagnostic> {
        self.keyword("TABLE")?;
        let mut source = self.identifier("the table to window, TABLE name")?;
        while self.peek() == Some(&Token::Period) {
            self.next += 1;
            source.push('.');
            source.push_str(&self.identifier("a table name after '.'")?);
        }
        let mut partition_by = Vec::new();
        if self.words.get(self.next).is_some_and(|t| is_word(t, "PARTITION")) {
            if !matches!(self.kind, WindowKind::Session { .. }) {
                return Err(self.error("a comma (PARTITION BY belongs to SESSION only)"));
            }
            self.next += 1;
            self.keyword("BY")?;
            let parenthesized = self.peek() == Some(&Token::LParen);
            if parenthesized {
                self.next += 1;
            }
            loop {
                partition_by.push(self.identifier("a PARTITION BY column")?);
                let more = self.peek() == Some(&Token::Comma)
                    && !self.words.get(self.next + 1).is_some_and(|t| is_word(t, "DESCRIPTOR"));
                if !more {
                    break;
                }
                self.next += 1;
            }
            if parenthesized {
                self.expect(Token::RParen, "')' after the PARTITION BY columns")?;
            }
        }
        self.expect(Token::Comma, "a comma and DESCRIPTOR(time column)")?;
        self.keyword("DESCRIPTOR")?;
        self.expect(Token::LParen, "'(' after DESCRIPTOR")?;
        let descriptor = self.identifier("the time column in DESCRIPTOR(...)")?;
        self.expect(Token::RParen, "')' after the time column")?;
        let kind = match self.kind {
            WindowKind::Tumble { .. } => WindowKind::Tumble { size: self.interval("window size")? },
            WindowKind::Hop { .. } => {
                let slide = self.interval("slide")?;
                let size = self.interval("window size")?;
                if size % slide != 0 {
                    return Err(self.error("a window size that is a whole multiple of the slide"));
                }
                WindowKind::Hop { slide, size }
            }
            WindowKind::Session { .. } => {
                let gap = self.interval("session gap")?;
                WindowKind::Session { gap, partition_by: partition_by.iter().map(|k| normalize(k)).collect() }
            }
        };
        self.expect(Token::RParen, "')' closing the call")?;
        if outer {
            self.expect(Token::RParen, "')' closing TABLE(...)")?;
        }
        Ok((source, descriptor, kind, self.next - 1))
    }
}

/// An identifier as DataFusion resolves it: unquoted names are lower-cased.
pub(crate) fn normalize(identifier: &str) -> String {
    match identifier.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        Some(quoted) => quoted.replace("\"\"", "\""),
        None => identifier.to_lowercase(),
    }
}

fn table_name_of(source: &str) -> String {
    source.rsplit('.').next().unwrap_or(source).to_owned()
}

/// `name` followed by spaces so that it covers `original`, keeping its line breaks.
fn padded(name: &str, original: &str) -> String {
    let mut text = name.to_owned();
    let mut width = name.chars().count();
    for c in original.chars() {
        if c == '\n' {
            text.push('\n');
        } else if width > 0 {
            width -= 1;
        } else {
            text.push(' ');
        }
    }
    text
}

/// Byte offsets of line starts, to turn the tokenizer's 1-based line and column (in
/// characters) into byte offsets.
struct LineOffsets<'a> {
    sql: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineOffsets<'a> {
    fn new(sql: &'a str) -> Self {
        let starts = std::iter::once(0).chain(sql.match_indices('\n').map(|(i, _)| i + 1)).collect();
        Self { sql, starts }
    }

    fn offset(&self, line: u64, column: u64) -> Option<usize> {
        let start = *self.starts.get((line as usize).checked_sub(1)?)?;
        let rest = &self.sql[start..];
        let column = (column as usize).checked_sub(1)?;
        Some(start + rest.char_indices().nth(column).map(|(i, _)| i).unwrap_or(rest.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_replaced_in_place_keeping_positions() {
        let sql = "SELECT window_start, COUNT(*) FROM TABLE(\n  TUMBLE(TABLE bid, DESCRIPTOR(ts), \
                   INTERVAL '10' SECOND)) GROUP BY window_start, window_end";
        let (text, calls) = rewrite(sql).unwrap();
        assert_eq!(text.len(), sql.len());
        assert!(text.contains("FROM __sluice_window_0.\"bid\""), "{text}");
        assert_eq!(text.find("GROUP"), sql.find("GROUP"));
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].kind, WindowKind::Tumble { size: 10_000 });
        assert_eq!(calls[0].descriptor, "ts");
        assert_eq!(calls[0].position, (1, 36));
    }

    #[test]
    fn hop_and_session_arguments_parse() {
        let sql = "SELECT 1 FROM HOP(TABLE nx.bid, DESCRIPTOR(\"dateTime\"), INTERVAL '2' SECOND, \
                   INTERVAL '10 seconds') h; SELECT 1 FROM SESSION(TABLE t PARTITION BY a, b, \
                   DESCRIPTOR(ts), INTERVAL '1' MINUTE)";
        let (_, calls) = rewrite(sql).unwrap();
        assert_eq!(calls[0].kind, WindowKind::Hop { slide: 2_000, size: 10_000 });
        assert_eq!(calls[0].source, "nx.bid");
        assert_eq!(calls[0].descriptor, "\"dateTime\"");
        assert_eq!(calls[1].statement, 1);
        assert_eq!(
            calls[1].kind,
            WindowKind::Session { gap: 60_000, partition_by: vec!["a".into(), "b".into()] }
        );
    }

    #[test]
    fn malformed_calls_say_what_was_expected() {
        let error = rewrite("SELECT 1 FROM TUMBLE(TABLE t, ts, INTERVAL '1' SECOND)").unwrap_err();
        assert!(error.message.contains("expected DESCRIPTOR, found ts"), "{}", error.message);
        assert!(error.suggestion.unwrap().contains("DESCRIPTOR(ts)"));
        let error =
            rewrite("SELECT 1 FROM TUMBLE(TABLE t, DESCRIPTOR(ts), INTERVAL '1' FORTNIGHT)").unwrap_err();
        assert!(error.message.contains("invalid window size of TUMBLE"), "{}", error.message);
    }

    #[test]
    fn hop_windows_cover_each_time_size_over_slide_times() {
        let hop = WindowKind::Hop { slide: 5, size: 15 };
        let windows: Vec<_> = hop.windows_of(12).collect();
        assert_eq!(windows, vec![(10, 25), (5, 20), (0, 15)]);
        let tumble = WindowKind::Tumble { size: 10 };
        assert_eq!(tumble.windows_of(-1).collect::<Vec<_>>(), vec![(-10, 0)]);
    }
}
