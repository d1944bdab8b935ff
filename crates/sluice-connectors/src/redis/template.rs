//! Key templates: `user:{user_id}` is the text `user:` followed by the value of column
//! `user_id`. `{{` and `}}` stand for literal braces (e.g. a cluster hash tag,
//! `{{orders}}:{id}` → `{orders}:42`).
//!
//! A value is written as text the way SQL's `CAST(x AS VARCHAR)` writes it (`42`, `2.0`,
//! `true`, `2024-03-01T10:00:00`); `binary` values as their bytes. Keys are built per batch,
//! one column at a time; a row with a NULL in a column its key uses has no key.

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, SchemaRef};
use sluice_runtime::{Error, Result};

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Column(String),
}

impl Template {
    /// Parses `text`; errors say how to write what was meant.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = text.char_indices().peekable();
        while let Some((at, c)) = chars.next() {
            match c {
                '{' if chars.peek().is_some_and(|(_, next)| *next == '{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek().is_some_and(|(_, next)| *next == '}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let rest = &text[at + 1..];
                    let Some(end) = rest.find('}') else {
                        return Err(format!(
                            "unclosed \"{{\" in \"{text}\"; write {{column}} for a column's value, or {{{{ for a brace"
                        ));
                    };
                    let column = &rest[..end];
                    if column.is_empty() || column.contains('{') {
                        return Err(format!(
                            "\"{{{column}}}\" in \"{text}\" does not name a column; write {{column}} for a column's \
                             value, or {{{{ and }}}} for braces"
                        ));
                    }
                    if !literal.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut literal)));
                    }
                    parts.push(Part::Column(column.to_owned()));
                    for _ in 0..column.chars().count() + 1 {
                        chars.next();
                    }
                }
                '}' => {
                    return Err(format!("unmatched \"}}\" in \"{text}\"; write }}}} for a literal brace"));
                }
                other => literal.push(other),
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Ok(Self { parts })
    }

    /// The columns the template uses, in order of first use.
    pub(crate) fn columns(&self) -> Vec<&str> {
        let mut columns: Vec<&str> = Vec::new();
        for part in &self.parts {
            if let Part::Column(name) = part
                && !columns.contains(&name.as_str())
            {
                columns.push(name);
            }
        }
        columns
    }

    /// The template with its columns found in `schema`; `option` names the option in
    /// messages (e.g. `options.key`).
    pub(crate) fn bind(&self, schema: &SchemaRef, option: &str) -> Result<BoundTemplate> {
        let mut parts = Vec::with_capacity(self.parts.len());
        let mut columns: Vec<usize> = Vec::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => parts.push(BoundPart::Literal(text.as_bytes().to_vec())),
                Part::Column(name) => {
                    let index = column_index(schema, name, option)?;
                    if !is_scalar(schema.field(index).data_type()) {
                        return Err(Error::user(format!(
                            "{option} uses column `{name}`, of type {}, which cannot be part of a Redis key; use a \
                             column of a scalar type (cast it in SQL)",
                            schema.field(index).data_type()
                        )));
                    }
                    let slot = match columns.iter().position(|c| *c == index) {
                        Some(slot) => slot,
                        None => {
                            columns.push(index);
                            columns.len() - 1
                        }
                    };
                    parts.push(BoundPart::Column(slot));
                }
            }
        }
        let names = columns.iter().map(|i| schema.field(*i).name().clone()).collect();
        Ok(BoundTemplate { parts, columns, names })
    }
}

/// A template whose columns are indexes of a stream's schema.
#[derive(Debug, Clone)]
pub(crate) struct BoundTemplate {
    parts: Vec<BoundPart>,
    /// Indexes of the columns used, each once.
    columns: Vec<usize>,
    names: Vec<String>,
}

#[derive(Debug, Clone)]
enum BoundPart {
    Literal(Vec<u8>),
    /// Index into `BoundTemplate::columns`.
    Column(usize),
}

impl BoundTemplate {
    /// Indexes (in the schema) of the columns the template uses.
    pub(crate) fn columns(&self) -> &[usize] {
        &self.columns
    }

    /// One value per row of `batch`: the rendered bytes, or the name of a column whose value
    /// is NULL in that row.
    pub(crate) fn render(&self, batch: &RecordBatch) -> Result<Vec<Result<Vec<u8>, String>>> {
        let values: Vec<Vec<Option<Vec<u8>>>> =
            self.columns.iter().map(|i| text_values(batch.column(*i))).collect::<Result<_>>()?;
        Ok((0..batch.num_rows()).map(|row| self.render_row(&values, row)).collect())
    }

    /// Row `row`'s value, from the text of the template's columns.
    fn render_row(&self, values: &[Vec<Option<Vec<u8>>>], row: usize) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        for part in &self.parts {
            match part {
                BoundPart::Literal(bytes) => out.extend_from_slice(bytes),
                BoundPart::Column(slot) => match &values[*slot][row] {
                    Some(bytes) => out.extend_from_slice(bytes),
                    None => return Err(self.names[*slot].clone()),
                },
            }
        }
        Ok(out)
    }
}

/// The index of column `name`, or a user error naming `option` and the stream's columns.
pub(crate) fn column_index(schema: &SchemaRef, name: &str, option: &str) -> Result<usize> {
    schema.index_of(name).map_err(|_| {
        let columns: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        Error::user(format!(
            "{option} names column `{name}`, which the stream into the Redis sink does not have; its columns are: {}",
            columns.join(", ")
        ))
    })
}

/// Whether values of `data_type` have a text form (everything but lists, structs and maps).
pub(crate) fn is_scalar(data_type: &DataType) -> bool {
    !data_type.is_nested()
}

/// Each value of `column` as bytes: text as is, binary as its bytes, lists, structs and maps as
/// JSON, anything else as `CAST(x AS VARCHAR)` writes it; `None` for NULL.
pub(crate) fn text_values(column: &ArrayRef) -> Result<Vec<Option<Vec<u8>>>> {
    let bytes = |value: Option<&[u8]>| value.map(<[u8]>::to_vec);
    Ok(match column.data_type() {
        DataType::Utf8 => column.as_string::<i32>().iter().map(|v| bytes(v.map(str::as_bytes))).collect(),
        DataType::LargeUtf8 => {
            column.as_string::<i64>().iter().map(|v| bytes(v.map(str::as_bytes))).collect()
        }
        DataType::Binary => column.as_binary::<i32>().iter().map(bytes).collect(),
        DataType::LargeBinary => column.as_binary::<i64>().iter().map(bytes).collect(),
        nested if nested.is_nested() => json_values(column)?,
        _ => {
            let text = cast(column, &DataType::Utf8)?;
            text.as_string::<i32>().iter().map(|v| bytes(v.map(str::as_bytes))).collect()
        }
    })
}

/// Each value of a nested column as JSON.
fn json_values(column: &ArrayRef) -> Result<Vec<Option<Vec<u8>>>> {
    let field = arrow::datatypes::Field::new("v", column.data_type().clone(), true);
    let batch = RecordBatch::try_new(
        std::sync::Arc::new(arrow::datatypes::Schema::new(vec![field])),
        vec![column.clone()],
    )?;
    let mut lines = Vec::new();
    let mut writer = arrow::json::LineDelimitedWriter::new(&mut lines);
    writer.write(&batch)?;
    writer.finish()?;
    let mut values = Vec::with_capacity(column.len());
    for (row, line) in lines.split(|b| *b == b'\n').take(column.len()).enumerate() {
        if column.is_null(row) {
            values.push(None);
            continue;
        }
        let object: serde_json::Value = serde_json::from_slice(line)
            .map_err(|e| Error::internal(format!("Arrow wrote a JSON line that does not parse: {e}")))?;
        values.push(Some(object.get("v").map(ToString::to_string).unwrap_or_default().into_bytes()));
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, ListArray, StringArray, TimestampMillisecondArray};
    use arrow::datatypes::{Field, Int64Type, Schema};

    use super::*;

    fn batch() -> RecordBatch {
        let list = ListArray::from_iter_primitive::<Int64Type, _, _>(vec![
            Some(vec![Some(1), None]),
            None,
            Some(vec![]),
        ]);
        let columns: Vec<(&str, ArrayRef)> = vec![
            ("id", Arc::new(Int64Array::from(vec![Some(7), None, Some(-1)]))),
            ("region", Arc::new(StringArray::from(vec![Some("eu"), Some("us"), None]))),
            ("at", Arc::new(TimestampMillisecondArray::from(vec![Some(1_709_287_200_000), None, Some(5)]))),
            ("tags", Arc::new(list)),
        ];
        let schema = Schema::new(
            columns
                .iter()
                .map(|(name, array)| Field::new(*name, array.data_type().clone(), true))
                .collect::<Vec<_>>(),
        );
        RecordBatch::try_new(Arc::new(schema), columns.into_iter().map(|(_, a)| a).collect()).unwrap()
    }

    fn rendered(template: &str) -> Vec<Result<String, String>> {
        let batch = batch();
        let bound = Template::parse(template).unwrap().bind(&batch.schema(), "options.key").unwrap();
        bound
            .render(&batch)
            .unwrap()
            .into_iter()
            .map(|key| key.map(|bytes| String::from_utf8(bytes).unwrap()))
            .collect()
    }

    #[test]
    fn columns_are_replaced_by_their_text_and_nulls_name_the_column() {
        assert_eq!(
            rendered("user:{id}:{region}:{id}"),
            [Ok("user:7:eu:7".to_owned()), Err("id".to_owned()), Err("region".to_owned())]
        );
        assert_eq!(rendered("{{tag}}:{at}")[0], Ok("{tag}:2024-03-01T10:00:00".to_owned()));
        assert_eq!(
            rendered("constant"),
            [Ok("constant".to_owned()), Ok("constant".to_owned()), Ok("constant".to_owned())]
        );
    }

    #[test]
    fn malformed_templates_say_how_to_write_one() {
        let cases = [
            (
                "user:{id",
                "unclosed \"{\" in \"user:{id\"; write {column} for a column's value, or {{ for a brace",
            ),
            (
                "user:{}",
                "\"{}\" in \"user:{}\" does not name a column; write {column} for a column's value, or {{ and }} for braces",
            ),
            ("a}b", "unmatched \"}\" in \"a}b\"; write }} for a literal brace"),
        ];
        for (text, message) in cases {
            assert_eq!(Template::parse(text).unwrap_err(), message, "{text}");
        }
        assert_eq!(Template::parse("{a}-{b}-{a}").unwrap().columns(), ["a", "b"]);
        assert!(Template::parse("plain").unwrap().columns().is_empty());
    }

    #[test]
    fn unknown_and_nested_columns_cannot_be_bound() {
        let schema = batch().schema();
        let unknown = Template::parse("{nope}").unwrap().bind(&schema, "options.key").unwrap_err();
        assert_eq!(
            unknown.report(),
            "options.key names column `nope`, which the stream into the Redis sink does not have; its columns are: \
             id, region, at, tags"
        );
        let nested = Template::parse("{tags}").unwrap().bind(&schema, "options.key").unwrap_err();
        assert!(nested.report().contains("of type List"), "{}", nested.report());
    }

    #[test]
    fn nested_values_are_json() {
        let values = text_values(batch().column(3)).unwrap();
        assert_eq!(values, [Some(b"[1,null]".to_vec()), None, Some(b"[]".to_vec())]);
    }
}
