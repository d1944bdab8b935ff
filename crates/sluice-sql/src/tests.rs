use std::sync::Arc;

use arrow::array::{
    Array, AsArray, Float64Array, Int64Array, ListBuilder, RecordBatch, StringArray, StringBuilder,
};
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, SchemaRef};
use sluice_runtime::exchange::worker_for_key_group;
use sluice_runtime::processor::{KeyGroupState, Processor, SnapshotWriter};

use super::*;

fn bids_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("auction", DataType::Int64, false),
        Field::new("price", DataType::Int64, true),
        Field::new("bidder", DataType::Utf8, true),
        Field::new("tags", DataType::new_list(DataType::Utf8, true), true),
    ]))
}

fn bids() -> Vec<SqlInput> {
    vec![SqlInput { table: "bids".into(), schema: bids_schema() }]
}

fn bids_batch() -> RecordBatch {
    let mut tags = ListBuilder::new(StringBuilder::new());
    for row in [vec!["a", "b"], vec![], vec!["c"]] {
        for tag in row {
            tags.values().append_value(tag);
        }
        tags.append(true);
    }
    RecordBatch::try_new(
        bids_schema(),
        vec![
            Arc::new(Int64Array::from(vec![1, 2, 3])),
            Arc::new(Int64Array::from(vec![Some(10), None, Some(30)])),
            Arc::new(StringArray::from(vec![Some("ann"), Some("bob"), None])),
            Arc::new(tags.finish()),
        ],
    )
    .unwrap()
}

fn run(sql: &str, inputs: &[SqlInput], input: usize, batch: RecordBatch) -> Vec<RecordBatch> {
    let mut processor = plan(sql, inputs, &PlanOptions::default()).unwrap_or_else(|d| panic!("{sql}: {d:?}"));
    let mut out = Vec::new();
    processor.process(input, batch, &mut out).unwrap();
    for batch in &out {
        assert_eq!(batch.schema(), processor.output_schema());
    }
    out
}

fn error(sql: &str) -> Diagnostic {
    let mut diagnostics = plan(sql, &bids(), &PlanOptions::default()).expect_err(sql);
    assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
    diagnostics.remove(0)
}

fn at(diagnostic: &Diagnostic) -> Option<(usize, usize)> {
    diagnostic.location.map(|l| (l.line, l.column))
}

#[test]
fn projection_and_filter_give_hand_computed_rows() {
    let sql = "SELECT auction, price * 2 + 0.5 AS doubled, upper(bidder) AS who \
               FROM bids WHERE price IS NOT NULL AND auction > 0";
    let processor = plan(sql, &bids(), &PlanOptions::default()).unwrap();
    assert!(processor.is_direct());
    let schema = processor.output_schema();
    assert_eq!(schema.field(0), &Field::new("auction", DataType::Int64, false));
    assert_eq!(schema.field(1).data_type(), &DataType::Float64);
    let out = run(sql, &bids(), 0, bids_batch());
    assert_eq!(out.len(), 1);
    let batch = &out[0];
    assert_eq!(batch.column(0).as_primitive::<Int64Type>().values(), &[1, 3]);
    let doubled = batch.column(1).as_primitive::<Float64Type>();
    assert_eq!(doubled, &Float64Array::from(vec![20.5, 60.5]));
    let who = batch.column(2).as_string::<i32>();
    assert_eq!(who.value(0), "ANN");
    assert!(who.is_null(1));
}

#[test]
fn constant_columns_keep_one_row_per_input_row() {
    let out = run("SELECT 'x' AS tag, 1 + 1 AS two FROM bids", &bids(), 0, bids_batch());
    assert_eq!(out[0].num_rows(), 3);
    assert_eq!(out[0].column(1).as_primitive::<Int64Type>().values(), &[2, 2, 2]);
}

#[test]
fn filter_that_keeps_nothing_emits_nothing() {
    assert!(run("SELECT auction FROM bids WHERE price > 1000", &bids(), 0, bids_batch()).is_empty());
}

#[test]
fn unnest_runs_through_the_plan() {
    let sql = "SELECT auction, unnest(tags) AS tag FROM bids";
    let processor = plan(sql, &bids(), &PlanOptions::default()).unwrap();
    assert!(!processor.is_direct());
    let out = run(sql, &bids(), 0, bids_batch());
    let rows: Vec<(i64, String)> = out
        .iter()
        .flat_map(|batch| {
            let auctions = batch.column(0).as_primitive::<Int64Type>().clone();
            let tags = batch.column(1).as_string::<i32>().clone();
            (0..batch.num_rows()).map(move |i| (auctions.value(i), tags.value(i).to_owned()))
        })
        .collect();
    assert_eq!(rows, vec![(1, "a".into()), (1, "b".into()), (3, "c".into())]);
}

#[test]
fn union_all_over_two_inputs_routes_each_batch_to_its_branch() {
    let inputs = vec![
        SqlInput { table: "bids".into(), schema: bids_schema() },
        SqlInput { table: "nx.bid".into(), schema: bids_schema() },
    ];
    let sql = "SELECT auction FROM bids WHERE price > 15 \
               UNION ALL SELECT auction + 100 FROM nx.bid";
    let from_first = run(sql, &inputs, 0, bids_batch());
    let values: Vec<i64> =
        from_first.iter().flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec()).collect();
    assert_eq!(values, vec![3]);
    let from_second = run(sql, &inputs, 1, bids_batch());
    let values: Vec<i64> =
        from_second.iter().flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec()).collect();
    assert_eq!(values, vec![101, 102, 103]);
}

#[test]
fn chained_views_feed_the_final_query() {
    let sql = "CREATE VIEW priced AS SELECT auction, price FROM bids WHERE price IS NOT NULL;\n\
               CREATE TEMPORARY VIEW big AS SELECT auction FROM priced WHERE price > 15;\n\
               SELECT auction * 10 AS a FROM big";
    let out = run(sql, &bids(), 0, bids_batch());
    assert_eq!(out[0].column(0).as_primitive::<Int64Type>().values(), &[30]);
}

#[test]
fn failing_cast_is_a_user_error() {
    let schema = Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8, true)]));
    let inputs = vec![SqlInput { table: "t".into(), schema: Arc::clone(&schema) }];
    let mut processor = plan("SELECT CAST(s AS INT) AS n FROM t", &inputs, &PlanOptions::default()).unwrap();
    let batch = RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(vec!["12", "x"]))]).unwrap();
    let error = processor.process(0, batch, &mut Vec::new()).unwrap_err();
    assert_eq!(error.kind(), sluice_runtime::ErrorKind::User);
    assert!(error.to_string().contains("'x'"), "{error}");
}

const SUFFIX: &str = ": a SQL processor runs stateless SQL (projections, filters, functions, CASE, CAST, \
     UNNEST, UNION ALL) and one GROUP BY aggregation as the last step of its final query, windowed \
     with TUMBLE, HOP or SESSION or updating per key";

#[test]
fn stateful_constructs_are_rejected_with_their_position() {
    let cases = [
        (
            "SELECT * FROM (SELECT bidder, count(*) AS n FROM bids GROUP BY bidder)",
            "GROUP BY inside a view, subquery or UNION",
            (1, 55),
        ),
        (
            "SELECT count(*) AS n FROM bids UNION ALL SELECT auction FROM bids",
            "the aggregate function count() inside a view, subquery or UNION",
            (1, 8),
        ),
        ("SELECT DISTINCT bidder FROM bids", "SELECT DISTINCT", (1, 8)),
        ("SELECT row_number() OVER () FROM bids", "a window function (OVER)", (1, 21)),
        ("SELECT * FROM bids ORDER BY price", "ORDER BY", (1, 20)),
        ("SELECT * FROM bids LIMIT 3", "LIMIT", (1, 20)),
        (
            "SELECT * FROM bids WHERE price > (SELECT max(price) FROM bids)",
            "a subquery inside an expression (IN, EXISTS or a scalar subquery)",
            (1, 35),
        ),
        (
            "SELECT auction FROM bids UNION SELECT auction FROM bids",
            "UNION without ALL (it removes duplicate rows; UNION ALL keeps them)",
            (1, 26),
        ),
        ("SELECT auction FROM bids INTERSECT SELECT auction FROM bids", "INTERSECT", (1, 26)),
    ];
    for (sql, construct, position) in cases {
        let diagnostic = error(sql);
        assert_eq!(diagnostic.message, format!("{construct} is not supported yet{SUFFIX}"), "{sql}");
        assert_eq!(at(&diagnostic), Some(position), "{sql}");
        assert_eq!(diagnostic.path, "");
    }
}

#[test]
fn clock_functions_and_queries_without_input_are_rejected() {
    assert!(error("SELECT now() FROM bids").message.starts_with("now is not supported yet"));
    assert!(error("SELECT 1").message.starts_with("a SELECT without FROM is not supported"));
}

#[test]
fn unknown_column_is_located_with_a_suggestion() {
    let diagnostic = error("SELECT auction,\n  prise * 2 FROM bids");
    assert_eq!(diagnostic.message, "unknown column \"prise\"");
    assert_eq!(diagnostic.suggestion.as_deref(), Some("did you mean \"price\"?"));
    assert_eq!(at(&diagnostic), Some((2, 3)));
}

#[test]
fn unknown_column_in_where_is_located() {
    let diagnostic = error("SELECT auction FROM bids WHERE biddr = 'x'");
    assert_eq!(diagnostic.message, "unknown column \"biddr\"");
    assert_eq!(diagnostic.suggestion.as_deref(), Some("did you mean \"bidder\"?"));
    assert_eq!(at(&diagnostic), Some((1, 32)));
}

#[test]
fn unknown_table_names_the_inputs() {
    let diagnostic = error("SELECT auction FROM bidz");
    assert_eq!(
        diagnostic.message,
        "unknown table \"bidz\": a SQL processor reads the tables named in its `inputs` (bids) \
         and the views it creates"
    );
    assert_eq!(diagnostic.suggestion.as_deref(), Some("did you mean \"bids\"?"));
    assert_eq!(at(&diagnostic), Some((1, 21)));
}

#[test]
fn syntax_error_says_what_was_expected_and_where() {
    let diagnostic = error("SELECT auction\nFROM bids WHERE");
    assert_eq!(diagnostic.message, "syntax error: expected an expression, found EOF");
    assert_eq!(at(&diagnostic), Some((2, 16)));
}

#[test]
fn errors_in_later_statements_are_positioned_in_the_whole_text() {
    let sql = "CREATE VIEW v AS SELECT auction, price FROM bids;\nSELECT auction, prise FROM v";
    let diagnostic = error(sql);
    assert_eq!(diagnostic.message, "unknown column \"prise\"");
    assert_eq!(at(&diagnostic), Some((2, 17)));

    let sql = "CREATE VIEW v AS SELECT auction FROM bids;\n\nSELECT auction FROM v ORDER BY auction";
    let diagnostic = error(sql);
    assert_eq!(at(&diagnostic), Some((3, 23)));
}

#[test]
fn statements_other_than_views_and_a_final_query_are_rejected() {
    let diagnostic = error("INSERT INTO bids VALUES (1, 2, 'x', NULL)");
    assert_eq!(
        diagnostic.message,
        "a SQL processor runs a query (SELECT ...) whose rows are its output; INSERT statements \
         are not allowed"
    );
    let diagnostic = error("DROP TABLE bids; SELECT auction FROM bids");
    assert!(diagnostic.message.starts_with("only CREATE VIEW statements may come before"));
    assert_eq!(at(&diagnostic), Some((1, 1)));
    let diagnostic = error("CREATE VIEW v AS SELECT auction FROM bids");
    assert!(diagnostic.message.starts_with("the SQL ends with CREATE VIEW"));
}

#[test]
fn type_errors_are_cleaned_up() {
    let diagnostic = error("SELECT upper(auction, 1) FROM bids");
    assert!(!diagnostic.message.contains("Error during planning"), "{}", diagnostic.message);
    let diagnostic = error("SELECT auction + bidder FROM bids");
    assert!(!diagnostic.message.contains("Error during planning"), "{}", diagnostic.message);
    assert!(!diagnostic.message.contains('\n'));
}

#[test]
fn unknown_functions_and_bad_filters_are_explained() {
    let diagnostic = error("SELECT uper(bidder) FROM bids");
    assert_eq!(diagnostic.message, "unknown function \"uper\"");
    assert_eq!(diagnostic.suggestion.as_deref(), Some("did you mean \"upper\"?"));
    assert_eq!(at(&diagnostic), Some((1, 8)));

    let diagnostic = error("SELECT auction FROM bids WHERE bidder");
    assert_eq!(
        diagnostic.message,
        "Cannot create filter with non-boolean predicate 'bids.bidder' returning Utf8"
    );
    assert_eq!(at(&diagnostic), Some((1, 26)));

    let diagnostic = error("SELECT substr(bidder) FROM bids");
    assert_eq!(diagnostic.message, "Substring without for/from is not valid");
}

#[test]
fn key_hashes_agree_across_compilations_and_batches() {
    let schema = bids_schema();
    let first = compile_key("bidder, auction % 2", &schema).unwrap();
    let second = compile_key("bidder, auction % 2", &schema).unwrap();
    let batch = bids_batch();
    let reordered = batch.slice(1, 2);
    let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
    first.hash_rows(&batch, &mut a).unwrap();
    second.hash_rows(&batch, &mut b).unwrap();
    second.hash_rows(&reordered, &mut c).unwrap();
    assert_eq!(a, b);
    assert_eq!(&a[1..], &c[..]);
    assert_ne!(a[0], a[1]);

    let diagnostic = compile_key("bider", &schema).err().unwrap().remove(0);
    assert_eq!(diagnostic.suggestion.as_deref(), Some("did you mean \"bidder\"?"));
    assert_eq!(at(&diagnostic), Some((1, 1)));
    assert!(compile_key("count(auction)", &schema).is_err());
}

#[test]
fn clones_run_independently() {
    let processor = plan("SELECT unnest(tags) AS tag FROM bids", &bids(), &PlanOptions::default()).unwrap();
    let mut clone = processor.clone_box();
    let mut out = Vec::new();
    clone.process(0, bids_batch(), &mut out).unwrap();
    clone.process(0, bids_batch(), &mut out).unwrap();
    assert_eq!(out.iter().map(RecordBatch::num_rows).sum::<usize>(), 6);
}

/// Prints per-batch cost; run with
/// `cargo test -p sluice-sql --release -- --ignored --nocapture per_batch_cost`.
#[test]
#[ignore = "timing, not correctness; run by hand in release mode"]
fn per_batch_cost() {
    let schema = Arc::new(Schema::new(vec![
        Field::new("auction", DataType::Int64, false),
        Field::new("price", DataType::Int64, true),
        Field::new("bidder", DataType::Utf8, true),
    ]));
    let inputs = vec![SqlInput { table: "bids".into(), schema: Arc::clone(&schema) }];
    let batch = |rows: i64| {
        RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(Int64Array::from_iter_values(0..rows)),
                Arc::new(Int64Array::from_iter_values((0..rows).map(|i| i % 100))),
                Arc::new(StringArray::from_iter_values((0..rows).map(|i| format!("b{}", i % 50)))),
            ],
        )
        .unwrap()
    };
    let queries = [
        ("projection+filter", "SELECT auction, price * 2 AS p FROM bids WHERE price > 10"),
        ("project+filter+upper", "SELECT auction, upper(bidder) AS b FROM bids WHERE price > 10"),
        ("general (unnest)", "SELECT auction, unnest(make_array(price, price)) AS p FROM bids"),
    ];
    for (name, sql) in queries {
        let mut processor = plan(sql, &inputs, &PlanOptions::default()).unwrap();
        for rows in [1, 8192] {
            let input = batch(rows);
            let iterations = if rows == 1 { 100_000 } else { 5_000 };
            let mut out = Vec::new();
            let start = std::time::Instant::now();
            for _ in 0..iterations {
                out.clear();
                processor.process(0, input.clone(), &mut out).unwrap();
            }
            let per_batch = start.elapsed() / iterations;
            let rate = rows as f64 / per_batch.as_secs_f64() / 1e6;
            eprintln!("{name:24} rows={rows:5}: {per_batch:>10.2?} per batch, {rate:8.1} M rows/s");
        }
    }
}

/// A snapshot of `processor` taken as the runtime takes it, asking for chunks of about
/// `chunk_bytes`.
pub(crate) fn snapshot(processor: &mut dyn Processor, chunk_bytes: usize) -> Vec<KeyGroupState> {
    struct Chunks(Vec<KeyGroupState>, usize);
    impl SnapshotWriter for Chunks {
        fn write(&mut self, key_group: u32, bytes: &[u8]) -> sluice_runtime::Result<()> {
            self.0.push(KeyGroupState { key_group, bytes: bytes.to_vec() });
            Ok(())
        }
        fn chunk_bytes(&self) -> usize {
            self.1
        }
    }
    let mut chunks = Chunks(Vec::new(), chunk_bytes);
    processor.snapshot(&mut chunks).unwrap();
    chunks.0
}

/// Restores into worker `index` of `peers` the chunks of `states` it owns, one at a time, as
/// the runtime does.
pub(crate) fn restore_owned(
    processor: &mut dyn Processor,
    states: &[KeyGroupState],
    index: usize,
    peers: usize,
) {
    let owned = states.iter().filter(|s| worker_for_key_group(u64::from(s.key_group), peers) == index);
    for state in owned {
        processor.restore(vec![state.clone()]).unwrap();
    }
}

/// Counts, per thread, the bytes allocated and not yet freed, and their peak, so that a test
/// can bound the memory a piece of code holds at once ([`allocations::peak_during`]). Bytes
/// freed by another thread than the one that allocated them count there; RocksDB's own (C++)
/// allocations are not seen.
pub(crate) mod allocations {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    struct Counting;

    // Test-only: delegates every call to the system allocator and only counts sizes.
    #[allow(unsafe_code)]
    #[global_allocator]
    static COUNTING: Counting = Counting;

    thread_local! {
        static LIVE: Cell<isize> = const { Cell::new(0) };
        static PEAK: Cell<isize> = const { Cell::new(0) };
    }

    // SAFETY: every method forwards to `System` with the caller's arguments unchanged.
    #[allow(unsafe_code)]
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let allocated = unsafe { System.alloc(layout) };
            if !allocated.is_null() {
                count(layout.size() as isize);
            }
            allocated
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            let allocated = unsafe { System.alloc_zeroed(layout) };
            if !allocated.is_null() {
                count(layout.size() as isize);
            }
            allocated
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            unsafe { System.dealloc(ptr, layout) };
            count(-(layout.size() as isize));
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            let moved = unsafe { System.realloc(ptr, layout, new_size) };
            if !moved.is_null() {
                count(new_size as isize - layout.size() as isize);
            }
            moved
        }
    }

    fn count(bytes: isize) {
        // `try_with`: a thread's locals may be gone while it exits. Const-initialised `Cell`s
        // never allocate, so counting cannot recurse.
        let _ = LIVE.try_with(|live| {
            let now = live.get() + bytes;
            live.set(now);
            let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
        });
    }

    /// Runs `f`, returning its result and the most bytes this thread held at once while it
    /// ran, beyond what it held before.
    pub(crate) fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
        let before = LIVE.with(Cell::get);
        PEAK.with(|peak| peak.set(before));
        let result = f();
        let peak = PEAK.with(Cell::get);
        (result, usize::try_from(peak - before).unwrap_or(0))
    }
}
