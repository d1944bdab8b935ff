//! A small Avro schema model, parsed from JSON per the Avro 1.11 specification: primitives,
//! records (and errors), enums, arrays, maps, unions, fixed, and references to named types by
//! (namespace-qualified) name. Logical types annotate their underlying type and do not change
//! it, as the specification says; unknown attributes are allowed.
//!
//! Parsing reports the first problem with the JSON path where it is, e.g.
//! `fields[2].type: unknown type "strng"`. Field defaults are checked against their field's
//! type (as Java's parser does by default), so a schema a Confluent registry refuses is refused
//! here too.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// A parsed schema: its root and every named type it defines, by full name.
#[derive(Debug, Clone, PartialEq)]
pub struct AvroSchema {
    /// The top-level schema.
    pub root: Node,
    /// Records, enums and fixed types by full name (`namespace.name`, or `name` without one).
    pub names: BTreeMap<String, Named>,
}

/// A schema position: a primitive, a named type (by full name), or a composite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// One of the eight primitive types.
    Primitive(Primitive),
    /// A record, enum or fixed, defined in [`AvroSchema::names`].
    Named(String),
    /// An array of items.
    Array(Box<Node>),
    /// A map with string keys.
    Map(Box<Node>),
    /// A union of branches.
    Union(Vec<Node>),
}

/// The primitive types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Primitive {
    /// `null`
    Null,
    /// `boolean`
    Boolean,
    /// `int`: 32-bit signed.
    Int,
    /// `long`: 64-bit signed.
    Long,
    /// `float`: 32-bit IEEE 754.
    Float,
    /// `double`: 64-bit IEEE 754.
    Double,
    /// `bytes`
    Bytes,
    /// `string`: UTF-8.
    String,
}

impl Primitive {
    /// The type's name in a schema.
    pub fn name(self) -> &'static str {
        match self {
            Primitive::Null => "null",
            Primitive::Boolean => "boolean",
            Primitive::Int => "int",
            Primitive::Long => "long",
            Primitive::Float => "float",
            Primitive::Double => "double",
            Primitive::Bytes => "bytes",
            Primitive::String => "string",
        }
    }

    fn from_name(name: &str) -> Option<Primitive> {
        Some(match name {
            "null" => Primitive::Null,
            "boolean" => Primitive::Boolean,
            "int" => Primitive::Int,
            "long" => Primitive::Long,
            "float" => Primitive::Float,
            "double" => Primitive::Double,
            "bytes" => Primitive::Bytes,
            "string" => Primitive::String,
            _ => return None,
        })
    }
}

/// A named type's definition.
#[derive(Debug, Clone, PartialEq)]
pub struct Named {
    /// Full name.
    pub name: String,
    /// Full alternative names (used when resolving a writer's type of another name).
    pub aliases: Vec<String>,
    /// What it is.
    pub kind: NamedKind,
}

impl Named {
    /// The name without its namespace.
    pub fn short_name(&self) -> &str {
        short(&self.name)
    }
}

/// What a named type is.
#[derive(Debug, Clone, PartialEq)]
pub enum NamedKind {
    /// A record (or an error) with fields in order.
    Record(Vec<Field>),
    /// An enum: its symbols in order and the default used for unknown symbols.
    Enum {
        /// The symbols.
        symbols: Vec<String>,
        /// What a reader uses for a writer's symbol it does not know.
        default: Option<String>,
    },
    /// Fixed-size bytes.
    Fixed(u64),
}

impl NamedKind {
    /// `record`, `enum` or `fixed`.
    pub fn kind_name(&self) -> &'static str {
        match self {
            NamedKind::Record(_) => "record",
            NamedKind::Enum { .. } => "enum",
            NamedKind::Fixed(_) => "fixed",
        }
    }
}

/// A record field.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// Its name.
    pub name: String,
    /// Alternative names a reader accepts for it.
    pub aliases: Vec<String>,
    /// Its type.
    pub schema: Node,
    /// Its default value, used by a reader when the writer has no such field.
    pub default: Option<Value>,
}

/// The name without its namespace.
pub fn short(full_name: &str) -> &str {
    full_name.rsplit('.').next().unwrap_or(full_name)
}

/// Why a schema is not valid Avro: where (a JSON path such as `fields[2].type`, empty for the
/// root) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaError {
    /// The JSON path of the problem.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for SchemaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for SchemaError {}

type Parsed<T> = Result<T, SchemaError>;

/// How deeply types may nest in a schema (a record in a field of a record is one level more, as
/// is an array's items, a map's values or a union's branch), and how deeply a default value may
/// nest. Real schemas stay far below it; it keeps a crafted schema from exhausting the stack.
pub const MAX_DEPTH: usize = 100;

fn error<T>(path: &str, message: impl Into<String>) -> Parsed<T> {
    Err(SchemaError { path: path.to_string(), message: message.into() })
}

/// Parses schema text (JSON) into a schema.
pub fn parse(text: &str) -> Parsed<AvroSchema> {
    let json: Value = serde_json::from_str(text).map_err(|e| SchemaError {
        path: String::new(),
        message: format!("not JSON ({e}); an Avro schema is a JSON string, object or array"),
    })?;
    parse_value(&json)
}

/// Parses a schema already read as JSON.
pub fn parse_value(json: &Value) -> Parsed<AvroSchema> {
    let mut parser = Parser { names: BTreeMap::new() };
    let root = parser.node(json, "", None, 0)?;
    let schema = AvroSchema { root, names: parser.names };
    schema.check_defaults()?;
    Ok(schema)
}

struct Parser {
    names: BTreeMap<String, Named>,
}

fn join(path: &str, next: &str) -> String {
    if path.is_empty() { next.to_string() } else { format!("{path}.{next}") }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Parser {
    fn node(&mut self, json: &Value, path: &str, namespace: Option<&str>, depth: usize) -> Parsed<Node> {
        if depth > MAX_DEPTH {
            return error(
                path,
                format!(
                    "the schema nests types more than {MAX_DEPTH} levels deep; flatten it (define a named type once and refer to it by name)"
                ),
            );
        }
        let depth = depth + 1;
        match json {
            Value::String(name) => self.reference(name, path, namespace),
            Value::Array(branches) => self.union(branches, path, namespace, depth),
            Value::Object(object) => self.object(object, path, namespace, depth),
            other => error(
                path,
                format!(
                    "{other} is not a schema; use a type name such as \"string\", an object or a union array"
                ),
            ),
        }
    }

    fn reference(&self, name: &str, path: &str, namespace: Option<&str>) -> Parsed<Node> {
        if let Some(primitive) = Primitive::from_name(name) {
            return Ok(Node::Primitive(primitive));
        }
        let full = full_name(name, namespace);
        if self.names.contains_key(&full) {
            return Ok(Node::Named(full));
        }
        // As Java's parser does: an unqualified name may also mean a type of the null namespace.
        if !name.contains('.') && self.names.contains_key(name) {
            return Ok(Node::Named(name.to_string()));
        }
        let hint = match name {
            "record" | "enum" | "array" | "map" | "fixed" | "error" => {
                format!("; a {name} is written as an object: {{\"type\": \"{name}\", ...}}")
            }
            _ => "; use a primitive (null, boolean, int, long, float, double, bytes, string) or a named type defined before this point".to_string(),
        };
        let looked_up = if full == name { String::new() } else { format!(" (looked up as \"{full}\")") };
        error(path, format!("unknown type \"{name}\"{looked_up}{hint}"))
    }

    fn union(
        &mut self,
        branches: &[Value],
        path: &str,
        namespace: Option<&str>,
        depth: usize,
    ) -> Parsed<Node> {
        let mut nodes = Vec::with_capacity(branches.len());
        let mut seen: BTreeSet<String> = BTreeSet::new();
        for (index, branch) in branches.iter().enumerate() {
            let branch_path = format!("{path}[{index}]");
            let node = self.node(branch, &branch_path, namespace, depth)?;
            let key = match &node {
                Node::Union(_) => {
                    return error(&branch_path, "a union may not directly contain another union");
                }
                Node::Primitive(p) => p.name().to_string(),
                Node::Named(name) => name.clone(),
                Node::Array(_) => "array".to_string(),
                Node::Map(_) => "map".to_string(),
            };
            if !seen.insert(key.clone()) {
                return error(
                    &branch_path,
                    format!("the union holds {key} twice; each type may appear once"),
                );
            }
            nodes.push(node);
        }
        Ok(Node::Union(nodes))
    }

    fn object(
        &mut self,
        object: &serde_json::Map<String, Value>,
        path: &str,
        namespace: Option<&str>,
        depth: usize,
    ) -> Parsed<Node> {
        let type_path = join(path, "type");
        let kind = match object.get("type") {
            Some(Value::String(kind)) => kind.as_str(),
            Some(nested @ (Value::Object(_) | Value::Array(_))) => {
                // `{"type": {...}}` and `{"type": [...]}` wrap a schema, as Java's parser allows.
                return self.node(nested, &type_path, namespace, depth);
            }
            Some(other) => return error(&type_path, format!("{other} is not a type name")),
            None => return error(path, "a schema object needs a \"type\""),
        };
        match kind {
            "record" | "error" => self.record(object, path, namespace, depth),
            "enum" => self.enumeration(object, path, namespace),
            "fixed" => self.fixed(object, path, namespace),
            "array" => {
                let items = object.get("items").map_or_else(
                    || error(path, "an array needs \"items\" (the schema of its elements)"),
                    |items| self.node(items, &join(path, "items"), namespace, depth),
                )?;
                Ok(Node::Array(Box::new(items)))
            }
            "map" => {
                let values = object.get("values").map_or_else(
                    || error(path, "a map needs \"values\" (the schema of its values)"),
                    |values| self.node(values, &join(path, "values"), namespace, depth),
                )?;
                Ok(Node::Map(Box::new(values)))
            }
            // A primitive or a named reference, possibly annotated with a logical type (which
            // does not change how it is encoded or resolved).
            other => self.reference(other, &type_path, namespace),
        }
    }

    /// The definition's full name and the namespace its contents resolve against.
    fn define_name(
        &self,
        object: &serde_json::Map<String, Value>,
        path: &str,
        namespace: Option<&str>,
        kind: &str,
    ) -> Parsed<(String, Vec<String>)> {
        let name = match object.get("name") {
            Some(Value::String(name)) => name,
            Some(other) => return error(&join(path, "name"), format!("{other} is not a name")),
            None => return error(path, format!("a {kind} needs a \"name\"")),
        };
        let own_namespace = match object.get("namespace") {
            Some(Value::String(space)) => Some(space.as_str()),
            Some(Value::Null) | None => namespace,
            Some(other) => return error(&join(path, "namespace"), format!("{other} is not a namespace")),
        };
        let full = full_name(name, own_namespace);
        check_full_name(&full, &join(path, "name"))?;
        if Primitive::from_name(short(&full)).is_some() {
            return error(&join(path, "name"), format!("\"{name}\" is a primitive type's name"));
        }
        if self.names.contains_key(&full) {
            return error(&join(path, "name"), format!("\"{full}\" is defined twice"));
        }
        let space = full.rsplit_once('.').map(|(space, _)| space);
        let aliases = aliases(object, path, space)?;
        Ok((full, aliases))
    }

    fn record(
        &mut self,
        object: &serde_json::Map<String, Value>,
        path: &str,
        namespace: Option<&str>,
        depth: usize,
    ) -> Parsed<Node> {
        let (full, aliases) = self.define_name(object, path, namespace, "record")?;
        let space = full.rsplit_once('.').map(|(space, _)| space.to_string());
        // Defined before its fields are read, so fields may refer to it (recursive types).
        self.names
            .insert(full.clone(), Named { name: full.clone(), aliases, kind: NamedKind::Record(Vec::new()) });
        let Some(Value::Array(fields_json)) = object.get("fields") else {
            return error(path, format!("record \"{full}\" needs \"fields\", an array of field objects"));
        };
        let mut fields = Vec::with_capacity(fields_json.len());
        let mut seen = BTreeSet::new();
        for (index, field) in fields_json.iter().enumerate() {
            let field_path = join(path, &format!("fields[{index}]"));
            let Value::Object(field) = field else {
                return error(&field_path, "a field is an object with \"name\" and \"type\"");
            };
            let name = match field.get("name") {
                Some(Value::String(name)) if valid_name(name) => name.clone(),
                Some(Value::String(name)) => {
                    return error(
                        &join(&field_path, "name"),
                        format!(
                            "\"{name}\" is not a valid name (letters, digits and _, not starting with a digit)"
                        ),
                    );
                }
                _ => return error(&field_path, "a field needs a \"name\" (a string)"),
            };
            if !seen.insert(name.clone()) {
                return error(
                    &join(&field_path, "name"),
                    format!("field \"{name}\" appears twice in \"{full}\""),
                );
            }
            let Some(type_json) = field.get("type") else {
                return error(&field_path, format!("field \"{name}\" needs a \"type\""));
            };
            let schema = self.node(type_json, &join(&field_path, "type"), space.as_deref(), depth)?;
            let field_aliases = match field.get("aliases") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|alias| alias.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| SchemaError {
                        path: join(&field_path, "aliases"),
                        message: "aliases are strings".into(),
                    })?,
                Some(_) => return error(&join(&field_path, "aliases"), "aliases are an array of strings"),
            };
            if let Some(order) = field.get("order")
                && !matches!(order.as_str(), Some("ascending" | "descending" | "ignore"))
            {
                return error(
                    &join(&field_path, "order"),
                    "order is \"ascending\", \"descending\" or \"ignore\"",
                );
            }
            fields.push(Field {
                name,
                aliases: field_aliases,
                schema,
                default: field.get("default").cloned(),
            });
        }
        if let Some(named) = self.names.get_mut(&full) {
            named.kind = NamedKind::Record(fields);
        }
        Ok(Node::Named(full))
    }

    fn enumeration(
        &mut self,
        object: &serde_json::Map<String, Value>,
        path: &str,
        namespace: Option<&str>,
    ) -> Parsed<Node> {
        let (full, aliases) = self.define_name(object, path, namespace, "enum")?;
        let Some(Value::Array(symbols_json)) = object.get("symbols") else {
            return error(path, format!("enum \"{full}\" needs \"symbols\", an array of names"));
        };
        let mut symbols = Vec::with_capacity(symbols_json.len());
        for (index, symbol) in symbols_json.iter().enumerate() {
            let symbol_path = join(path, &format!("symbols[{index}]"));
            match symbol.as_str() {
                Some(symbol) if valid_name(symbol) => {
                    if symbols.iter().any(|s| s == symbol) {
                        return error(&symbol_path, format!("symbol \"{symbol}\" appears twice"));
                    }
                    symbols.push(symbol.to_string());
                }
                _ => {
                    return error(
                        &symbol_path,
                        format!(
                            "{symbol} is not a valid symbol (letters, digits and _, not starting with a digit)"
                        ),
                    );
                }
            }
        }
        let default = match object.get("default") {
            None | Some(Value::Null) => None,
            Some(Value::String(default)) if symbols.contains(default) => Some(default.clone()),
            Some(other) => {
                return error(&join(path, "default"), format!("{other} is not one of the enum's symbols"));
            }
        };
        self.names.insert(
            full.clone(),
            Named { name: full.clone(), aliases, kind: NamedKind::Enum { symbols, default } },
        );
        Ok(Node::Named(full))
    }

    fn fixed(
        &mut self,
        object: &serde_json::Map<String, Value>,
        path: &str,
        namespace: Option<&str>,
    ) -> Parsed<Node> {
        let (full, aliases) = self.define_name(object, path, namespace, "fixed")?;
        let Some(size) = object.get("size").and_then(Value::as_u64) else {
            return error(path, format!("fixed \"{full}\" needs \"size\", a non-negative integer"));
        };
        self.names.insert(full.clone(), Named { name: full.clone(), aliases, kind: NamedKind::Fixed(size) });
        Ok(Node::Named(full))
    }
}

fn full_name(name: &str, namespace: Option<&str>) -> String {
    match namespace {
        Some(space) if !name.contains('.') && !space.is_empty() => format!("{space}.{name}"),
        _ => name.to_string(),
    }
}

fn check_full_name(full: &str, path: &str) -> Parsed<()> {
    if full.split('.').all(valid_name) {
        Ok(())
    } else {
        error(
            path,
            format!(
                "\"{full}\" is not a valid name (dot-separated parts of letters, digits and _, none starting with a digit)"
            ),
        )
    }
}

fn aliases(
    object: &serde_json::Map<String, Value>,
    path: &str,
    namespace: Option<&str>,
) -> Parsed<Vec<String>> {
    match object.get("aliases") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(index, alias)| {
                let alias_path = join(path, &format!("aliases[{index}]"));
                let Some(alias) = alias.as_str() else { return error(&alias_path, "an alias is a string") };
                let full = full_name(alias, namespace);
                check_full_name(&full, &alias_path)?;
                Ok(full)
            })
            .collect(),
        Some(_) => error(&join(path, "aliases"), "aliases are an array of names"),
    }
}

impl AvroSchema {
    /// The definition of named type `name`.
    pub fn named(&self, name: &str) -> &Named {
        // Every `Node::Named` is created with its definition, so a miss is a parser bug.
        self.names
            .get(name)
            .unwrap_or_else(|| panic!("broken invariant: named type \"{name}\" has no definition"))
    }

    fn check_defaults(&self) -> Parsed<()> {
        let mut paths = Vec::new();
        self.collect_records(&self.root, "", &mut BTreeSet::new(), &mut paths);
        for (name, path) in paths {
            let NamedKind::Record(fields) = &self.named(&name).kind else { continue };
            for (index, field) in fields.iter().enumerate() {
                if let Some(default) = &field.default
                    && let Err(reason) = self.default_fits(&field.schema, default)
                {
                    return error(
                        &join(&path, &format!("fields[{index}].default")),
                        format!(
                            "default {default} of field \"{}\" does not match its type: {reason}",
                            field.name
                        ),
                    );
                }
            }
        }
        Ok(())
    }

    /// Every record defined under `node`, with the path of its definition.
    fn collect_records(
        &self,
        node: &Node,
        path: &str,
        seen: &mut BTreeSet<String>,
        out: &mut Vec<(String, String)>,
    ) {
        match node {
            Node::Primitive(_) => {}
            Node::Array(items) => self.collect_records(items, &join(path, "items"), seen, out),
            Node::Map(values) => self.collect_records(values, &join(path, "values"), seen, out),
            Node::Union(branches) => {
                for (index, branch) in branches.iter().enumerate() {
                    self.collect_records(branch, &format!("{path}[{index}]"), seen, out);
                }
            }
            Node::Named(name) => {
                if !seen.insert(name.clone()) {
                    return;
                }
                if let NamedKind::Record(fields) = &self.named(name).kind {
                    out.push((name.clone(), path.to_string()));
                    for (index, field) in fields.iter().enumerate() {
                        self.collect_records(
                            &field.schema,
                            &join(path, &format!("fields[{index}].type")),
                            seen,
                            out,
                        );
                    }
                }
            }
        }
    }

    /// Whether JSON `value` is a valid default for `node` (a union's default matches its first
    /// branch), and if not, why.
    pub fn default_fits(&self, node: &Node, value: &Value) -> Result<(), String> {
        self.value_fits(node, value, 0)
    }

    fn value_fits(&self, node: &Node, value: &Value, depth: usize) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err(format!("the default nests more than {MAX_DEPTH} levels deep"));
        }
        let depth = depth + 1;
        let mismatch = |what: &str| Err(format!("expected {what}, found {value}"));
        match node {
            Node::Primitive(primitive) => match (primitive, value) {
                (Primitive::Null, Value::Null) | (Primitive::Boolean, Value::Bool(_)) => Ok(()),
                (Primitive::Int, Value::Number(n))
                    if n.as_i64().is_some_and(|n| i32::try_from(n).is_ok()) =>
                {
                    Ok(())
                }
                (Primitive::Long, Value::Number(n)) if n.as_i64().is_some() => Ok(()),
                (Primitive::Float | Primitive::Double, Value::Number(_)) => Ok(()),
                (Primitive::Bytes | Primitive::String, Value::String(_)) => Ok(()),
                (primitive, _) => mismatch(primitive.name()),
            },
            Node::Array(items) => match value {
                Value::Array(elements) => {
                    elements.iter().try_for_each(|element| self.value_fits(items, element, depth))
                }
                _ => mismatch("an array"),
            },
            Node::Map(values) => match value {
                Value::Object(entries) => {
                    entries.values().try_for_each(|entry| self.value_fits(values, entry, depth))
                }
                _ => mismatch("an object (a map)"),
            },
            Node::Union(branches) => match branches.first() {
                Some(first) => self
                    .value_fits(first, value, depth)
                    .map_err(|reason| format!("a union's default matches its first branch: {reason}")),
                None => Err("an empty union has no values".into()),
            },
            Node::Named(name) => match &self.named(name).kind {
                NamedKind::Record(fields) => {
                    let Value::Object(object) = value else { return mismatch("an object (a record)") };
                    for field in fields {
                        match object.get(&field.name) {
                            Some(inner) => self
                                .value_fits(&field.schema, inner, depth)
                                .map_err(|reason| format!("field \"{}\": {reason}", field.name))?,
                            // A reader fills it with the field's own default, which is checked
                            // where the field is defined (checking it here again would recurse
                            // forever on a record whose default holds itself).
                            None if field.default.is_some() => {}
                            None => return Err(format!("field \"{}\" is missing", field.name)),
                        }
                    }
                    Ok(())
                }
                NamedKind::Enum { symbols, .. } => match value.as_str() {
                    Some(symbol) if symbols.iter().any(|s| s == symbol) => Ok(()),
                    _ => mismatch(&format!("one of the symbols {symbols:?}")),
                },
                NamedKind::Fixed(size) => match value.as_str() {
                    Some(text) if text.chars().count() as u64 == *size => Ok(()),
                    _ => mismatch(&format!("a string of {size} characters")),
                },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(text: &str) -> String {
        parse(text).map(|_| ()).expect_err(text).to_string()
    }

    #[test]
    fn primitives_and_composites_parse() {
        assert_eq!(parse("\"string\"").unwrap().root, Node::Primitive(Primitive::String));
        assert_eq!(
            parse(r#"{"type": "long", "logicalType": "timestamp-millis"}"#).unwrap().root,
            Node::Primitive(Primitive::Long)
        );
        let schema = parse(
            r#"{"type": "record", "name": "Order", "namespace": "shop", "fields": [
                {"name": "id", "type": "long"},
                {"name": "tags", "type": {"type": "array", "items": "string"}, "default": []},
                {"name": "attrs", "type": {"type": "map", "values": ["null", "int"]}},
                {"name": "status", "type": {"type": "enum", "name": "Status", "symbols": ["NEW", "PAID"], "default": "NEW"}},
                {"name": "next", "type": ["null", "Order"], "default": null},
                {"name": "again", "type": "shop.Status"},
                {"name": "hash", "type": {"type": "fixed", "name": "Md5", "size": 16}},
                {"name": "price", "type": {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 2}}
            ]}"#,
        )
        .unwrap();
        assert_eq!(schema.root, Node::Named("shop.Order".into()));
        assert!(schema.names.contains_key("shop.Status"));
        assert!(schema.names.contains_key("shop.Md5"));
        let NamedKind::Record(fields) = &schema.named("shop.Order").kind else { panic!() };
        assert_eq!(
            fields[4].schema,
            Node::Union(vec![Node::Primitive(Primitive::Null), Node::Named("shop.Order".into())])
        );
    }

    #[test]
    fn namespaces_resolve_as_the_specification_says() {
        let schema = parse(
            r#"{"type": "record", "name": "a.b.Outer", "namespace": "ignored", "fields": [
                {"name": "inner", "type": {"type": "record", "name": "Inner", "fields": []}},
                {"name": "other", "type": {"type": "record", "name": "x.Other", "fields": [
                    {"name": "back", "type": "a.b.Inner"}
                ]}},
                {"name": "again", "type": "Inner"}
            ]}"#,
        )
        .unwrap();
        assert!(schema.names.contains_key("a.b.Inner"));
        assert!(schema.names.contains_key("x.Other"));
        assert_eq!(
            invalid(
                r#"{"type": "record", "name": "a.Outer", "fields": [
                {"name": "other", "type": {"type": "record", "name": "x.Other", "fields": [{"name": "i", "type": "Outer"}]}}]}"#
            ),
            "fields[0].type.fields[0].type: unknown type \"Outer\" (looked up as \"x.Outer\"); use a primitive (null, boolean, int, long, float, double, bytes, string) or a named type defined before this point"
        );
    }

    #[test]
    fn invalid_schemas_say_what_and_where() {
        let cases = [
            (
                r#"{"type": "record", "name": "R", "fields": [{"name": "a", "type": "int"}, {"name": "b", "type": "long"}, {"name": "c", "type": "strng"}]}"#,
                "fields[2].type: unknown type \"strng\"",
            ),
            ("\"record\"", "unknown type \"record\"; a record is written as an object"),
            (r#"{"type": "record", "fields": []}"#, "a record needs a \"name\""),
            (r#"{"type": "record", "name": "R"}"#, "record \"R\" needs \"fields\""),
            (
                r#"{"type": "record", "name": "R", "fields": [{"name": "a", "type": "int"}, {"name": "a", "type": "int"}]}"#,
                "fields[1].name: field \"a\" appears twice",
            ),
            (
                r#"{"type": "record", "name": "R", "fields": [{"name": "1a", "type": "int"}]}"#,
                "fields[0].name: \"1a\" is not a valid name",
            ),
            (
                r#"{"type": "record", "name": "R", "fields": [{"name": "a"}]}"#,
                "fields[0]: field \"a\" needs a \"type\"",
            ),
            (
                r#"{"type": "record", "name": "R", "fields": [{"name": "a", "type": "int", "default": "x"}]}"#,
                "fields[0].default: default \"x\" of field \"a\" does not match its type: expected int",
            ),
            (
                r#"{"type": "record", "name": "R", "fields": [{"name": "a", "type": ["null", "int"], "default": 1}]}"#,
                "a union's default matches its first branch",
            ),
            (
                r#"{"type": "enum", "name": "E", "symbols": ["A", "A"]}"#,
                "symbols[1]: symbol \"A\" appears twice",
            ),
            (
                r#"{"type": "enum", "name": "E", "symbols": ["A"], "default": "B"}"#,
                "default: \"B\" is not one of the enum's symbols",
            ),
            (r#"{"type": "fixed", "name": "F"}"#, "fixed \"F\" needs \"size\""),
            (r#"{"type": "array"}"#, "an array needs \"items\""),
            (r#"{"type": "map", "values": "nope"}"#, "values: unknown type \"nope\""),
            (r#"["null", "null"]"#, "[1]: the union holds null twice"),
            (r#"["null", ["int"]]"#, "[1]: a union may not directly contain another union"),
            (
                r#"[{"type": "array", "items": "int"}, {"type": "array", "items": "long"}]"#,
                "[1]: the union holds array twice",
            ),
            (
                r#"{"type": "record", "name": "R", "fields": [{"name": "a", "type": {"type": "enum", "name": "R", "symbols": []}}]}"#,
                "\"R\" is defined twice",
            ),
            (r#"{"type": "record", "name": "int", "fields": []}"#, "is a primitive type's name"),
            ("42", "42 is not a schema"),
            ("{", "not JSON"),
            (r#"{"name": "x"}"#, "a schema object needs a \"type\""),
        ];
        for (text, expected) in cases {
            let message = invalid(text);
            assert!(
                message.contains(expected),
                "{text}: got {message:?}, expected it to contain {expected:?}"
            );
        }
    }

    #[test]
    fn record_and_fixed_defaults_are_checked() {
        parse(r#"{"type": "record", "name": "R", "fields": [
            {"name": "p", "type": {"type": "record", "name": "P", "fields": [{"name": "x", "type": "int"}, {"name": "y", "type": "int", "default": 0}]}, "default": {"x": 1}},
            {"name": "f", "type": {"type": "fixed", "name": "F", "size": 2}, "default": "ab"},
            {"name": "m", "type": {"type": "map", "values": "long"}, "default": {"a": 1}}
        ]}"#)
        .unwrap();
        assert!(invalid(r#"{"type": "record", "name": "R", "fields": [
            {"name": "p", "type": {"type": "record", "name": "P", "fields": [{"name": "x", "type": "int"}]}, "default": {}}]}"#)
            .contains("field \"x\" is missing"));
        assert!(invalid(r#"{"type": "record", "name": "R", "fields": [{"name": "i", "type": "int", "default": 3000000000}]}"#)
            .contains("expected int"));
    }

    #[test]
    fn a_record_default_that_holds_its_own_record_does_not_recurse_forever() {
        // The field's default `{}` lacks "next", whose default is again `{}`: once a stack
        // overflow; now "next" is filled from its own default, checked once where it is defined.
        let schema =
            parse(r#"{"type":"record","name":"R","fields":[{"name":"next","type":"R","default":{}}]}"#)
                .unwrap();
        assert!(schema.names.contains_key("R"));
        let nested = parse(
            r#"{"type":"record","name":"R","fields":[{"name":"next","type":["null","R"],"default":null},
               {"name":"me","type":"R","default":{"next":null,"me":{"next":null}}}]}"#,
        );
        assert!(nested.is_ok(), "{nested:?}");
        assert!(
            invalid(
                r#"{"type":"record","name":"R","fields":[{"name":"next","type":"R","default":{"next":5}}]}"#
            )
            .contains("field \"next\": expected an object (a record), found 5")
        );
    }

    #[test]
    fn nesting_deeper_than_the_limit_is_refused_with_where() {
        let mut deep = String::from("\"int\"");
        for _ in 0..MAX_DEPTH {
            deep = format!(r#"{{"type": "array", "items": {deep}}}"#);
        }
        assert!(parse(&deep).is_ok(), "{MAX_DEPTH} levels are allowed");
        let deeper = format!(r#"{{"type": "array", "items": {deep}}}"#);
        let message = invalid(&deeper);
        assert!(message.contains("nests types more than 100 levels deep"), "{message}");
        assert!(message.starts_with("items.items."), "{message}");
    }
}
