//! Fitting typed data (Parquet files, Avro records) to a source's declared schema: columns are
//! matched by name (extra ones are not read) and converted to the declared types.

use arrow::array::{ArrayRef, new_null_array};
use arrow::compute::{CastOptions, can_cast_types, cast_with_options};
use arrow::datatypes::{Schema, SchemaRef};
use arrow::record_batch::RecordBatch;

/// What a declared column that the data does not have is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Missing {
    /// A problem: the data must have every declared column (files, declared writer schemas).
    Problem,
    /// All null if the column is nullable, as Avro's schema resolution reads a field with
    /// default null (records of writer schemas that evolved, named by a schema registry).
    NullIfNullable,
}

/// How the columns of data with one schema become the columns of the declared schema.
#[derive(Debug, Clone)]
pub(crate) struct Conform {
    schema: SchemaRef,
    /// Per declared column, its index among the columns read (`None`: all null).
    columns: Vec<Option<usize>>,
}

impl Conform {
    /// Matches the `declared` columns to those `found` by name: the indexes of the found
    /// columns to read (ascending: the order a projection yields them in) and how to arrange
    /// them. Each type that cannot be converted is one problem, and so is each missing column
    /// unless `missing` lets it be null.
    pub(crate) fn plan(
        found: &Schema,
        declared: &SchemaRef,
        missing: Missing,
    ) -> Result<(Vec<usize>, Self), Vec<String>> {
        let mut roots = Vec::with_capacity(declared.fields().len());
        let mut problems = Vec::new();
        for field in declared.fields() {
            match found.index_of(field.name()) {
                Err(_) if missing == Missing::NullIfNullable && field.is_nullable() => roots.push(None),
                Err(_) => problems.push(format!(
                    "it has no column `{}`; its columns are {}",
                    field.name(),
                    describe_columns(found)
                )),
                Ok(index) => {
                    let found = found.field(index).data_type();
                    if !can_cast_types(found, field.data_type()) {
                        problems.push(format!(
                            "its column `{}` is {found}, which cannot be read as the declared {}",
                            field.name(),
                            field.data_type()
                        ));
                    }
                    roots.push(Some(index));
                }
            }
        }
        // Records that share no column with the declaration are of something else altogether,
        // not an older or newer version of it: all-null rows would hide that.
        if problems.is_empty() && !roots.is_empty() && roots.iter().all(Option::is_none) {
            problems.push(format!(
                "it has none of the declared columns; its columns are {}",
                describe_columns(found)
            ));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let mut read: Vec<usize> = roots.iter().flatten().copied().collect();
        read.sort_unstable();
        read.dedup();
        let columns = roots.iter().map(|root| root.and_then(|root| read.binary_search(&root).ok())).collect();
        Ok((read, Self { schema: declared.clone(), columns }))
    }

    /// The declared schema.
    pub(crate) fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// `batch` (the columns read, in the order [`plan`](Self::plan) gave) in the declared
    /// schema; a value that does not convert, or a null in a column declared not nullable, is
    /// an error saying which column and how to fix the declaration.
    pub(crate) fn apply(&self, batch: &RecordBatch) -> Result<RecordBatch, String> {
        let strict = CastOptions { safe: false, ..CastOptions::default() };
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.columns.len());
        for (field, &index) in self.schema.fields().iter().zip(&self.columns) {
            let Some(index) = index else {
                columns.push(new_null_array(field.data_type(), batch.num_rows()));
                continue;
            };
            let column = batch.column(index);
            if column.data_type() == field.data_type() {
                columns.push(column.clone());
                continue;
            }
            columns.push(cast_with_options(column, field.data_type(), &strict).map_err(|e| {
                format!(
                    "column `{}` holds a value that is not a {}: {e}; declare the column as {}",
                    field.name(),
                    field.data_type(),
                    column.data_type()
                )
            })?);
        }
        RecordBatch::try_new(self.schema.clone(), columns).map_err(|e| {
            let text = e.to_string();
            let text = text.strip_prefix("Invalid argument error: ").unwrap_or(&text).to_owned();
            format!("{text}; declare the column nullable")
        })
    }
}

/// `` `name` (type), ... `` for every column of `schema`, or `none`.
pub(crate) fn describe_columns(schema: &Schema) -> String {
    let names: Vec<String> =
        schema.fields().iter().map(|f| format!("`{}` ({})", f.name(), f.data_type())).collect();
    if names.is_empty() { "none".to_owned() } else { names.join(", ") }
}
