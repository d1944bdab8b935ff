//! Whether a reader schema can read data written with a writer schema, per the schema-resolution
//! rules of the Avro specification:
//!
//! - primitives match when equal, or by promotion: int → long, float, double; long → float,
//!   double; float → double; string ↔ bytes;
//! - records match by unqualified name (or a reader alias); reader fields are matched to writer
//!   fields by name (or a reader field alias); a reader field the writer lacks needs a default;
//!   writer fields the reader lacks are skipped;
//! - enums match by name; a writer symbol the reader lacks is an error unless the reader has a
//!   default symbol;
//! - fixed types match by name and size; arrays by items; maps by values;
//! - a writer union is readable when every branch is; a reader union reads a writer type when
//!   one of its branches does.
//!
//! Every incompatibility is reported with the reader's path (`/fields/2/type`) and the reason.
//!
//! The verdict for each pair of named types (writer's, reader's) is computed once and kept, as
//! Avro's Java `ReaderWriterCompatibilityChecker` does: while a pair is being checked it is
//! assumed compatible (recursive types), then its verdict is stored. So unions of records
//! referring to records cost time linear in the schemas, not exponential. A check that still
//! takes more than [`MAX_STEPS`] steps or nests more than [`MAX_CHECK_DEPTH`] levels gives up
//! with [`TooComplex`] rather than run away with a worker or the stack.

use std::collections::HashMap;

use super::avro::{AvroSchema, Named, NamedKind, Node, Primitive, short};

/// How many schema positions one check may compare before it gives up.
pub const MAX_STEPS: usize = 200_000;
/// How deeply one check may recurse before it gives up.
pub const MAX_CHECK_DEPTH: usize = 400;

/// The check gave up: the schemas are too large or too deeply nested to compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooComplex(pub String);

impl std::fmt::Display for TooComplex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Every reason `reader` cannot read data written with `writer` (empty: it can); an error when
/// the schemas are too complex to compare within the budget.
pub fn incompatibilities(writer: &AvroSchema, reader: &AvroSchema) -> Result<Vec<String>, TooComplex> {
    let mut check = Check {
        writer,
        reader,
        verdicts: HashMap::new(),
        started: Vec::new(),
        problems: Vec::new(),
        steps: 0,
        depth: 0,
        gave_up: None,
    };
    check.node(&writer.root, &reader.root, "");
    match check.gave_up {
        Some(reason) => Err(reason),
        None => Ok(check.problems),
    }
}

/// What is known about a pair of named types.
enum Verdict {
    /// Being checked: assumed compatible meanwhile (a recursive type refers to itself).
    InProgress,
    Compatible,
    /// Incompatible, with the first reason found.
    Incompatible(String),
}

struct Check<'a> {
    writer: &'a AvroSchema,
    reader: &'a AvroSchema,
    /// Verdicts by (writer's full name, reader's full name).
    verdicts: HashMap<(String, String), Verdict>,
    /// The pairs in the order their checks started.
    started: Vec<(String, String)>,
    problems: Vec<String>,
    steps: usize,
    depth: usize,
    gave_up: Option<TooComplex>,
}

fn at(path: &str) -> &str {
    if path.is_empty() { "/" } else { path }
}

fn promotes(writer: Primitive, reader: Primitive) -> bool {
    use Primitive::*;
    writer == reader
        || matches!(
            (writer, reader),
            (Int, Long | Float | Double)
                | (Long, Float | Double)
                | (Float, Double)
                | (String, Bytes)
                | (Bytes, String)
        )
}

impl Check<'_> {
    fn describe(&self, node: &Node, schema: &AvroSchema) -> String {
        match node {
            Node::Primitive(p) => p.name().to_string(),
            Node::Named(name) => format!("{} \"{name}\"", schema.named(name).kind.kind_name()),
            Node::Array(_) => "array".into(),
            Node::Map(_) => "map".into(),
            Node::Union(_) => "union".into(),
        }
    }

    /// Whether the writer's node can be read as the reader's, without recording problems.
    fn readable(&mut self, writer: &Node, reader: &Node, path: &str) -> bool {
        let before = self.problems.len();
        self.node(writer, reader, path);
        let ok = self.problems.len() == before;
        self.problems.truncate(before);
        ok
    }

    /// Counts a step, and says whether the budget still allows it.
    fn within_budget(&mut self) -> bool {
        if self.gave_up.is_some() {
            return false;
        }
        self.steps += 1;
        if self.steps > MAX_STEPS {
            self.gave_up = Some(TooComplex(format!(
                "the schemas are too complex to compare: the compatibility check gave up after {MAX_STEPS} steps; simplify the schema (fewer or smaller unions of records)"
            )));
        } else if self.depth > MAX_CHECK_DEPTH {
            self.gave_up = Some(TooComplex(format!(
                "the schemas are too complex to compare: the compatibility check nests more than {MAX_CHECK_DEPTH} levels deep; simplify the schema (shorter chains of records referring to records)"
            )));
        }
        self.gave_up.is_none()
    }

    fn node(&mut self, writer: &Node, reader: &Node, path: &str) {
        if !self.within_budget() {
            return;
        }
        self.depth += 1;
        self.compare(writer, reader, path);
        self.depth -= 1;
    }

    fn compare(&mut self, writer: &Node, reader: &Node, path: &str) {
        match (writer, reader) {
            (Node::Union(branches), _) => {
                for (index, branch) in branches.iter().enumerate() {
                    if !self.readable(branch, reader, path) {
                        if let Node::Union(_) = reader {
                            self.problems.push(format!(
                                "at {}: the writer's union branch {index} ({}) matches no branch of the reader's union",
                                at(path),
                                self.describe(branch, self.writer)
                            ));
                        } else {
                            // Report the branch's own reasons, which say more than "mismatch".
                            let before = self.problems.len();
                            self.node(branch, reader, path);
                            if self.problems.len() == before {
                                self.problems.push(format!(
                                    "at {}: the writer's union branch {index} cannot be read",
                                    at(path)
                                ));
                            }
                        }
                    }
                }
            }
            (_, Node::Union(branches)) => {
                let found = branches
                    .iter()
                    .enumerate()
                    .any(|(index, branch)| self.readable(writer, branch, &format!("{path}/{index}")));
                if !found {
                    self.problems.push(format!(
                        "at {}: the writer's {} matches no branch of the reader's union",
                        at(path),
                        self.describe(writer, self.writer)
                    ));
                }
            }
            (Node::Primitive(w), Node::Primitive(r)) => {
                if !promotes(*w, *r) {
                    self.problems.push(format!(
                        "at {}: the writer's {} cannot be read as {}",
                        at(path),
                        w.name(),
                        r.name()
                    ));
                }
            }
            (Node::Array(w), Node::Array(r)) => self.node(w, r, &format!("{path}/items")),
            (Node::Map(w), Node::Map(r)) => self.node(w, r, &format!("{path}/values")),
            (Node::Named(w), Node::Named(r)) => self.named(w, r, path),
            (w, r) => self.problems.push(format!(
                "at {}: the writer's {} cannot be read as {}",
                at(path),
                self.describe(w, self.writer),
                self.describe(r, self.reader)
            )),
        }
    }

    fn named(&mut self, writer_name: &str, reader_name: &str, path: &str) {
        let (writer, reader) = (self.writer.named(writer_name), self.reader.named(reader_name));
        let names_match = writer.short_name() == reader.short_name()
            || reader
                .aliases
                .iter()
                .any(|alias| alias == &writer.name || short(alias) == writer.short_name());
        let kinds = (writer.kind.kind_name(), reader.kind.kind_name());
        if kinds.0 != kinds.1 {
            self.problems.push(format!(
                "at {}: the writer's {} \"{}\" cannot be read as {} \"{}\"",
                at(path),
                kinds.0,
                writer.name,
                kinds.1,
                reader.name
            ));
            return;
        }
        if !names_match {
            self.problems.push(format!(
                "at {}: the writer's {} is named \"{}\" but the reader's is \"{}\" (names must match, or the reader must list the writer's name in its aliases)",
                at(path),
                kinds.0,
                writer.name,
                reader.name
            ));
            return;
        }
        let pair = (writer.name.clone(), reader.name.clone());
        match self.verdicts.get(&pair) {
            Some(Verdict::InProgress | Verdict::Compatible) => return,
            Some(Verdict::Incompatible(reason)) => {
                self.problems.push(format!(
                    "at {}: the writer's {} \"{}\" cannot be read as the reader's \"{}\" ({reason})",
                    at(path),
                    kinds.0,
                    writer.name,
                    reader.name
                ));
                return;
            }
            None => {}
        }
        self.verdicts.insert(pair.clone(), Verdict::InProgress);
        let started = self.started.len();
        self.started.push(pair.clone());
        let before = self.problems.len();
        self.named_contents(writer, reader, path);
        let verdict = match self.problems.get(before) {
            None => Verdict::Compatible,
            Some(reason) => {
                // Pairs found compatible meanwhile may rest on this one's assumption: forget
                // them (an incompatible verdict never rests on an assumption).
                for later in self.started.drain(started + 1..) {
                    if matches!(self.verdicts.get(&later), Some(Verdict::Compatible)) {
                        self.verdicts.remove(&later);
                    }
                }
                Verdict::Incompatible(reason.clone())
            }
        };
        self.verdicts.insert(pair, verdict);
    }

    fn named_contents(&mut self, writer: &Named, reader: &Named, path: &str) {
        match (&writer.kind, &reader.kind) {
            (NamedKind::Record(writer_fields), NamedKind::Record(reader_fields)) => {
                for (index, field) in reader_fields.iter().enumerate() {
                    let field_path = format!("{path}/fields/{index}");
                    let found = writer_fields.iter().find(|w| w.name == field.name).or_else(|| {
                        writer_fields.iter().find(|w| field.aliases.iter().any(|alias| alias == &w.name))
                    });
                    match found {
                        Some(written) => self.node(&written.schema, &field.schema, &format!("{field_path}/type")),
                        None if field.default.is_some() => {}
                        None => self.problems.push(format!(
                            "at {field_path}: the reader's field \"{}\" of record \"{}\" has no default value and is missing from the writer's schema (add a default to it)",
                            field.name, reader.name
                        )),
                    }
                }
            }
            (
                NamedKind::Enum { symbols: writer_symbols, .. },
                NamedKind::Enum { symbols: reader_symbols, default },
            ) => {
                let missing: Vec<&String> =
                    writer_symbols.iter().filter(|symbol| !reader_symbols.contains(symbol)).collect();
                if !missing.is_empty() && default.is_none() {
                    self.problems.push(format!(
                        "at {}: the reader's enum \"{}\" lacks the writer's symbol(s) {} and has no default symbol",
                        at(path),
                        reader.name,
                        missing.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(", ")
                    ));
                }
            }
            (NamedKind::Fixed(writer_size), NamedKind::Fixed(reader_size)) => {
                if writer_size != reader_size {
                    self.problems.push(format!(
                        "at {}: the writer's fixed \"{}\" has size {writer_size} but the reader's has size {reader_size}",
                        at(path),
                        writer.name
                    ));
                }
            }
            _ => unreachable!("kinds were compared above"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::avro::parse;

    fn problems(writer: &str, reader: &str) -> Vec<String> {
        incompatibilities(&parse(writer).unwrap(), &parse(reader).unwrap()).unwrap()
    }

    fn record(fields: &str) -> String {
        format!(r#"{{"type": "record", "name": "R", "namespace": "n", "fields": [{fields}]}}"#)
    }

    /// A union of records `T0` to `T{n}`, each `T{k}` with two optional fields of `T{k-1}`;
    /// `T0` has `extra` for fields. (Written as a union, the chain stays shallow as JSON.)
    fn chain(n: usize, extra: &str) -> String {
        let mut records = vec![format!(r#"{{"type": "record", "name": "T0", "fields": [{extra}]}}"#)];
        for k in 1..=n {
            let field = |name: &str| format!(r#"{{"name": "{name}", "type": ["null", "T{}"]}}"#, k - 1);
            records.push(format!(
                r#"{{"type": "record", "name": "T{k}", "fields": [{}, {}]}}"#,
                field("a"),
                field("b")
            ));
        }
        format!("[{}]", records.join(", "))
    }

    #[test]
    fn unions_of_records_referring_to_records_are_checked_in_linear_time() {
        // Each pair of named types once: 2^40 comparisons before verdicts were kept.
        assert_eq!(problems(&chain(40, ""), &chain(40, "")), Vec::<String>::new());
        let found = problems(&chain(40, ""), &chain(40, r#"{"name": "x", "type": "int"}"#));
        assert_eq!(found.len(), 41, "no branch is readable once T0 is not: {found:?}");
        assert!(found[0].contains("branch 0 (record \"T0\") matches no branch"), "{found:?}");
        // A known incompatible pair is reported, with its reason, wherever it recurs.
        let record = |name: &str, t0: &str| {
            format!(
                r#"{{"type": "record", "name": "{name}", "fields": [{{"name": "p", "type": {t0}}}, {{"name": "q", "type": "T0"}}]}}"#
            )
        };
        let found = problems(
            &record("W", r#"{"type": "record", "name": "T0", "fields": []}"#),
            &record("W", r#"{"type": "record", "name": "T0", "fields": [{"name": "x", "type": "int"}]}"#),
        );
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[1].starts_with("at /fields/1/type: the writer's record \"T0\" cannot be read as the reader's \"T0\" (at /fields/0/type/fields/0: the reader's field \"x\""), "{found:?}");
    }

    #[test]
    fn a_pair_assumed_compatible_while_its_check_ran_is_not_trusted_after_it_failed() {
        // B refers back to A; A then fails on its field "v". B's verdict rested on A's
        // assumption, so the reader union's B branch must not be taken as proven later.
        let writer = r#"{"type": "record", "name": "Root", "fields": [
            {"name": "x", "type": ["null", {"type": "record", "name": "A", "fields": [
                {"name": "b", "type": {"type": "record", "name": "B", "fields": [{"name": "a", "type": ["null", "A"]}]}},
                {"name": "v", "type": "long"}]}]},
            {"name": "y", "type": "B"}]}"#;
        let reader = writer.replace(r#""name": "v", "type": "long""#, r#""name": "v", "type": "int""#);
        let found = problems(writer, &reader);
        assert!(found.iter().any(|p| p.contains("/fields/1/type")), "{found:?}");
    }

    #[test]
    fn checks_too_deep_give_up_with_a_reason_instead_of_overflowing_the_stack() {
        // A chain of 300 records, each defined beside the last (not inside it, which the
        // parser's nesting limit would refuse), in a field the other side lacks: the check
        // meets the chain first at its top and walks down it.
        let schema = |defs_field: &str| {
            let mut defs =
                vec![r#"{"name": "t0", "type": {"type": "record", "name": "T0", "fields": []}}"#.to_string()];
            for k in 1..=300 {
                defs.push(format!(
                    r#"{{"name": "t{k}", "type": {{"type": "record", "name": "T{k}", "fields": [{{"name": "a", "type": ["null", "T{}"]}}]}}}}"#,
                    k - 1
                ));
            }
            parse(&format!(
                r#"{{"type": "record", "name": "Root", "fields": [
                    {{"name": "{defs_field}", "type": {{"type": "array", "items": {{"type": "record", "name": "Defs", "fields": [{}]}}}}, "default": []}},
                    {{"name": "top", "type": "T300"}}]}}"#,
                defs.join(", ")
            ))
            .unwrap()
        };
        let error = incompatibilities(&schema("written"), &schema("read")).unwrap_err();
        assert!(error.0.contains("nests more than 400 levels deep"), "{error}");
    }

    #[test]
    fn the_resolution_rules_as_a_table() {
        let id_long = r#"{"name": "id", "type": "long"}"#;
        let table: Vec<(String, String, bool)> = vec![
            // Primitives and promotions.
            ("\"int\"".into(), "\"int\"".into(), true),
            ("\"int\"".into(), "\"long\"".into(), true),
            ("\"int\"".into(), "\"float\"".into(), true),
            ("\"int\"".into(), "\"double\"".into(), true),
            ("\"long\"".into(), "\"float\"".into(), true),
            ("\"long\"".into(), "\"double\"".into(), true),
            ("\"float\"".into(), "\"double\"".into(), true),
            ("\"string\"".into(), "\"bytes\"".into(), true),
            ("\"bytes\"".into(), "\"string\"".into(), true),
            ("\"long\"".into(), "\"int\"".into(), false),
            ("\"double\"".into(), "\"float\"".into(), false),
            ("\"float\"".into(), "\"long\"".into(), false),
            ("\"string\"".into(), "\"int\"".into(), false),
            ("\"null\"".into(), "\"boolean\"".into(), false),
            // Logical types resolve as their underlying type.
            (r#"{"type": "int", "logicalType": "date"}"#.into(), "\"long\"".into(), true),
            // Records.
            (record(id_long), record(id_long), true),
            (record(id_long), record(&format!(r#"{id_long}, {{"name": "x", "type": "string", "default": ""}}"#)), true),
            (record(id_long), record(&format!(r#"{id_long}, {{"name": "x", "type": "string"}}"#)), false),
            (record(&format!(r#"{id_long}, {{"name": "x", "type": "string"}}"#)), record(id_long), true),
            (record(r#"{"name": "id", "type": "int"}"#), record(id_long), true),
            (record(id_long), record(r#"{"name": "id", "type": "int"}"#), false),
            (record(r#"{"name": "old", "type": "long"}"#), record(r#"{"name": "new", "aliases": ["old"], "type": "long"}"#), true),
            (record(id_long), r#"{"type": "record", "name": "Other", "fields": []}"#.into(), false),
            (record(id_long), r#"{"type": "record", "name": "Other", "aliases": ["n.R"], "fields": []}"#.into(), true),
            (record(id_long), r#"{"type": "record", "name": "R", "namespace": "elsewhere", "fields": []}"#.into(), true),
            // Enums.
            (r#"{"type": "enum", "name": "E", "symbols": ["A", "B"]}"#.into(), r#"{"type": "enum", "name": "E", "symbols": ["A", "B", "C"]}"#.into(), true),
            (r#"{"type": "enum", "name": "E", "symbols": ["A", "B", "C"]}"#.into(), r#"{"type": "enum", "name": "E", "symbols": ["A", "B"]}"#.into(), false),
            (r#"{"type": "enum", "name": "E", "symbols": ["A", "B", "C"]}"#.into(), r#"{"type": "enum", "name": "E", "symbols": ["A", "B"], "default": "A"}"#.into(), true),
            (r#"{"type": "enum", "name": "E", "symbols": ["A"]}"#.into(), r#"{"type": "enum", "name": "F", "symbols": ["A"]}"#.into(), false),
            // Fixed.
            (r#"{"type": "fixed", "name": "F", "size": 4}"#.into(), r#"{"type": "fixed", "name": "F", "size": 4}"#.into(), true),
            (r#"{"type": "fixed", "name": "F", "size": 4}"#.into(), r#"{"type": "fixed", "name": "F", "size": 8}"#.into(), false),
            (r#"{"type": "fixed", "name": "F", "size": 4}"#.into(), r#"{"type": "fixed", "name": "G", "size": 4}"#.into(), false),
            // Arrays and maps.
            (r#"{"type": "array", "items": "int"}"#.into(), r#"{"type": "array", "items": "long"}"#.into(), true),
            (r#"{"type": "array", "items": "long"}"#.into(), r#"{"type": "array", "items": "int"}"#.into(), false),
            (r#"{"type": "map", "values": "float"}"#.into(), r#"{"type": "map", "values": "double"}"#.into(), true),
            (r#"{"type": "map", "values": "string"}"#.into(), r#"{"type": "map", "values": "int"}"#.into(), false),
            (r#"{"type": "map", "values": "int"}"#.into(), r#"{"type": "array", "items": "int"}"#.into(), false),
            // Unions.
            ("\"int\"".into(), r#"["null", "int"]"#.into(), true),
            ("\"int\"".into(), r#"["null", "long"]"#.into(), true),
            ("\"string\"".into(), r#"["null", "int"]"#.into(), false),
            (r#"["null", "int"]"#.into(), r#"["null", "int", "string"]"#.into(), true),
            (r#"["null", "int", "string"]"#.into(), r#"["null", "int"]"#.into(), false),
            (r#"["null", "int"]"#.into(), "\"int\"".into(), false),
            (r#"["int", "long"]"#.into(), "\"double\"".into(), true),
            // Recursive types.
            (
                r#"{"type": "record", "name": "L", "fields": [{"name": "next", "type": ["null", "L"]}]}"#.into(),
                r#"{"type": "record", "name": "L", "fields": [{"name": "next", "type": ["null", "L"]}, {"name": "v", "type": "int", "default": 0}]}"#.into(),
                true,
            ),
            (
                r#"{"type": "record", "name": "L", "fields": [{"name": "next", "type": ["null", "L"]}, {"name": "v", "type": "long"}]}"#.into(),
                r#"{"type": "record", "name": "L", "fields": [{"name": "next", "type": ["null", "L"]}, {"name": "v", "type": "int"}]}"#.into(),
                false,
            ),
        ];
        for (writer, reader, compatible) in table {
            let found = problems(&writer, &reader);
            assert_eq!(found.is_empty(), compatible, "writer {writer} / reader {reader}: {found:?}");
        }
    }

    #[test]
    fn reasons_name_the_field_and_the_path() {
        let found = problems(
            &record(r#"{"name": "id", "type": "long"}"#),
            &record(r#"{"name": "id", "type": "long"}, {"name": "qty", "type": "int"}"#),
        );
        assert_eq!(
            found,
            [
                "at /fields/1: the reader's field \"qty\" of record \"n.R\" has no default value and is missing from the writer's schema (add a default to it)"
            ]
        );
        let found = problems(
            &record(r#"{"name": "id", "type": "long"}"#),
            &record(r#"{"name": "id", "type": "int"}"#),
        );
        assert_eq!(found, ["at /fields/0/type: the writer's long cannot be read as int"]);
        let found = problems(
            r#"{"type": "enum", "name": "E", "symbols": ["A", "B", "C"]}"#,
            r#"{"type": "enum", "name": "E", "symbols": ["A"]}"#,
        );
        assert_eq!(
            found,
            [
                "at /: the reader's enum \"E\" lacks the writer's symbol(s) \"B\", \"C\" and has no default symbol"
            ]
        );
    }
}
