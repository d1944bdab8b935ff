//! The Nexmark source: the standard online-auction benchmark stream of persons, auctions and
//! bids, with the ids, proportions and event times of the reference generator.
//!
//! Event `n`'s content depends only on the seed and `n`; events form a fixed set of replayable
//! splits of chunks, assigned to workers (see `schedule`). Columns are generated straight into
//! Arrow buffers; strings come from pools built once per source, so a bid costs no allocation.

pub mod model;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use arrow::array::{ArrayRef, Int64Array, StringArray, StringBuilder, TimestampMillisecondArray};
use arrow::buffer::{Buffer, OffsetBuffer};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use serde::Deserialize;
use sluice_runtime::Result;
use sluice_runtime::connector::{
    Source, SourceBatch, SourceContext, SourceOutput, SourceReader, SourceStatus, SplitState,
};
use sluice_spec::Diagnostic;

use crate::SourceRequest;
use crate::options;
use crate::schedule::{Schedule, Step};
use model::{EventClock, EventKind, EventRng};

/// Options of the `nexmark` source.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NexmarkOptions {
    /// Total events over all workers; unbounded when absent.
    pub events: Option<u64>,
    /// Events per second over all workers: the pace in wall-clock time and the spacing of event
    /// times. Absent: as fast as possible, with event times spaced for 10,000 events/s.
    pub events_per_second: Option<u64>,
    /// Seed of the random choices; the same seed gives the same events.
    pub seed: Option<u64>,
}

/// Option names of the `nexmark` source.
pub const OPTIONS: &[&str] = &["events", "events_per_second", "seed"];

/// Output index of persons.
pub const PERSON: usize = 0;
/// Output index of auctions.
pub const AUCTION: usize = 1;
/// Output index of bids.
pub const BID: usize = 2;

/// Builds the source from its request.
pub fn build(request: &SourceRequest) -> Result<Arc<dyn Source>, Vec<Diagnostic>> {
    let mut diagnostics = Vec::new();
    if request.schema.is_some() {
        diagnostics.push(Diagnostic::new(
            "schema",
            "the nexmark source has fixed schemas (person, auction, bid); remove `schema`",
        ));
    }
    let parsed = options::parse::<NexmarkOptions>(request.options, OPTIONS, "options");
    let options = match parsed {
        Ok(options) => options,
        Err(errors) => {
            diagnostics.extend(errors);
            return Err(diagnostics);
        }
    };
    if options.events_per_second == Some(0) {
        diagnostics.push(Diagnostic::new("options.events_per_second", "must be at least 1 event per second"));
    }
    if !diagnostics.is_empty() {
        return Err(diagnostics);
    }
    Ok(Arc::new(NexmarkSource::new(options)))
}

/// The configured Nexmark source.
pub struct NexmarkSource {
    options: NexmarkOptions,
    pools: Arc<Pools>,
    schemas: [SchemaRef; 3],
}

impl NexmarkSource {
    /// A source with these options.
    pub fn new(options: NexmarkOptions) -> Self {
        let pools = Arc::new(Pools::new(options.seed.unwrap_or(0)));
        Self { options, pools, schemas: [person_schema(), auction_schema(), bid_schema()] }
    }
}

impl Source for NexmarkSource {
    fn outputs(&self) -> Vec<SourceOutput> {
        ["person", "auction", "bid"]
            .iter()
            .zip(&self.schemas)
            .map(|(name, schema)| SourceOutput { name: (*name).into(), schema: schema.clone() })
            .collect()
    }

    fn open(&self, context: SourceContext) -> Result<Box<dyn SourceReader>> {
        let used = |i: usize| context.used_outputs.get(i).copied().unwrap_or(true);
        let schedule = Schedule::new(
            context.worker,
            self.options.events,
            self.options.events_per_second,
            context.restore.as_deref().map(Vec::as_slice),
        )?;
        Ok(Box::new(NexmarkReader {
            schedule,
            generator: Generator {
                seed: self.options.seed.unwrap_or(0),
                rate: self.options.events_per_second.unwrap_or(model::DEFAULT_EVENT_RATE),
                pools: self.pools.clone(),
                schemas: self.schemas.clone(),
                used: [used(PERSON), used(AUCTION), used(BID)],
            },
            context,
        }))
    }

    fn replayable(&self) -> bool {
        true
    }
}

struct NexmarkReader {
    schedule: Schedule,
    generator: Generator,
    context: SourceContext,
}

impl SourceReader for NexmarkReader {
    fn poll(&mut self, max_rows: usize, out: &mut Vec<SourceBatch>) -> Result<SourceStatus> {
        if self.context.stop.load(Ordering::Relaxed) {
            return Ok(SourceStatus::Finished);
        }
        match self.schedule.step(max_rows) {
            Step::Done => Ok(SourceStatus::Finished),
            Step::Wait(delay) => Ok(SourceStatus::Idle(delay.min(Duration::from_millis(100)))),
            Step::Rows { split, rows } => {
                let first = out.len();
                self.generator.generate(rows.start, rows.end, out)?;
                for batch in &mut out[first..] {
                    batch.split = split;
                }
                Ok(SourceStatus::Ready)
            }
        }
    }

    fn splits(&self) -> usize {
        self.schedule.splits()
    }

    fn snapshot(&mut self) -> Result<Vec<SplitState>> {
        Ok(self.schedule.snapshot())
    }
}

/// Generates the events of a range of event numbers, column by column.
pub struct Generator {
    seed: u64,
    rate: u64,
    pools: Arc<Pools>,
    schemas: [SchemaRef; 3],
    used: [bool; 3],
}

impl Generator {
    /// A generator of all three outputs, for tests and benchmarks.
    pub fn new(options: &NexmarkOptions) -> Self {
        let source = NexmarkSource::new(options.clone());
        Self {
            seed: source.options.seed.unwrap_or(0),
            rate: source.options.events_per_second.unwrap_or(model::DEFAULT_EVENT_RATE),
            pools: source.pools,
            schemas: source.schemas,
            used: [true; 3],
        }
    }

    /// Only generate the outputs marked `true` (persons, auctions, bids).
    pub fn with_used(mut self, used: [bool; 3]) -> Self {
        self.used = used;
        self
    }

    /// Appends the batches of events `start..end` to `out`, persons first, then auctions, then
    /// bids; empty and unused outputs are left out.
    pub fn generate(&self, start: u64, end: u64, out: &mut Vec<SourceBatch>) -> Result<()> {
        if self.used[PERSON] {
            self.push(PERSON, self.persons(start, end)?, out);
        }
        if self.used[AUCTION] {
            self.push(AUCTION, self.auctions(start, end)?, out);
        }
        if self.used[BID] {
            self.push(BID, self.bids(start, end)?, out);
        }
        Ok(())
    }

    fn push(&self, output: usize, batch: RecordBatch, out: &mut Vec<SourceBatch>) {
        if batch.num_rows() > 0 {
            out.push(SourceBatch { output, split: 0, batch });
        }
    }

    fn persons(&self, start: u64, end: u64) -> Result<RecordBatch> {
        let pools = &*self.pools;
        let capacity = count_of(start, end, EventKind::Person);
        let mut id = Vec::with_capacity(capacity);
        let mut date_time = Vec::with_capacity(capacity);
        let mut name = StringBuilder::with_capacity(capacity, capacity * 12);
        let mut email = StringBuilder::with_capacity(capacity, capacity * 17);
        let mut card = StringBuilder::with_capacity(capacity, capacity * 19);
        let mut city = StringBuilder::with_capacity(capacity, capacity * 10);
        let mut state = StringBuilder::with_capacity(capacity, capacity * 2);
        let mut text = [0u8; 32];
        for n in start..end {
            if model::kind(n) != EventKind::Person {
                continue;
            }
            let mut rng = EventRng::for_event(self.seed, n);
            id.push(model::last_base0_person_id(n) + model::FIRST_PERSON_ID);
            name.append_value(pools.pick(&pools.names, &mut rng));
            let local = random_word(&mut rng, 7, &mut text);
            let len = local.len();
            text[len] = b'@';
            let domain_len = random_word(&mut rng, 5, &mut text[len + 1..]).len();
            let at = len + 1 + domain_len;
            text[at..at + 4].copy_from_slice(b".com");
            email.append_value(ascii(&text[..at + 4]));
            for group in 0..4 {
                let digits = rng.below(10_000);
                let slot = &mut text[group * 5..group * 5 + 5];
                for (i, byte) in slot[..4].iter_mut().enumerate() {
                    *byte = b'0' + ((digits / 10u64.pow(3 - i as u32)) % 10) as u8;
                }
                slot[4] = b' ';
            }
            card.append_value(ascii(&text[..19]));
            city.append_value(pools.pick(&pools.cities, &mut rng));
            state.append_value(pools.pick(&pools.states, &mut rng));
            date_time.push(model::event_time_ms(n, self.rate));
        }
        let rows = id.len();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(id)),
            Arc::new(name.finish()),
            Arc::new(email.finish()),
            Arc::new(card.finish()),
            Arc::new(city.finish()),
            Arc::new(state.finish()),
            Arc::new(TimestampMillisecondArray::from(date_time)),
            empty_strings(rows),
        ];
        Ok(RecordBatch::try_new(self.schemas[PERSON].clone(), columns)?)
    }

    fn auctions(&self, start: u64, end: u64) -> Result<RecordBatch> {
        let pools = &*self.pools;
        let capacity = count_of(start, end, EventKind::Auction);
        let mut id = Vec::with_capacity(capacity);
        let mut item_name = StringBuilder::with_capacity(capacity, capacity * 12);
        let mut description = StringBuilder::with_capacity(capacity, capacity * 55);
        let mut initial_bid = Vec::with_capacity(capacity);
        let mut reserve = Vec::with_capacity(capacity);
        let mut date_time = Vec::with_capacity(capacity);
        let mut expires = Vec::with_capacity(capacity);
        let mut seller = Vec::with_capacity(capacity);
        let mut category = Vec::with_capacity(capacity);
        let horizon = model::auction_horizon_events();
        for n in start..end {
            if model::kind(n) != EventKind::Auction {
                continue;
            }
            let mut rng = EventRng::for_event(self.seed, n);
            let timestamp = model::event_time_ms(n, self.rate);
            id.push(model::last_base0_auction_id(n) + model::FIRST_AUCTION_ID);
            let hot_seller = rng.below(model::HOT_SELLERS_RATIO) > 0;
            let base0_seller = if hot_seller {
                model::last_base0_person_id(n) / model::HOT_SELLER_GROUP * model::HOT_SELLER_GROUP
            } else {
                model::next_base0_person_id(n, &mut rng)
            };
            seller.push(base0_seller + model::FIRST_PERSON_ID);
            category.push(model::FIRST_CATEGORY_ID + rng.below(model::NUM_CATEGORIES) as i64);
            let initial = model::next_price(&mut rng);
            initial_bid.push(initial);
            reserve.push(initial + model::next_price(&mut rng));
            // Auctions last on average as long as it takes to generate the next in-flight batch.
            let horizon_ms = (model::event_time_ms(n + horizon, self.rate) - timestamp).max(1);
            expires.push(timestamp + 1 + rng.below((horizon_ms * 2) as u64) as i64);
            item_name.append_value(pools.text(&mut rng, 3, 20));
            description.append_value(pools.text(&mut rng, 10, 100));
            date_time.push(timestamp);
        }
        let rows = id.len();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(id)),
            Arc::new(item_name.finish()),
            Arc::new(description.finish()),
            Arc::new(Int64Array::from(initial_bid)),
            Arc::new(Int64Array::from(reserve)),
            Arc::new(TimestampMillisecondArray::from(date_time)),
            Arc::new(TimestampMillisecondArray::from(expires)),
            Arc::new(Int64Array::from(seller)),
            Arc::new(Int64Array::from(category)),
            empty_strings(rows),
        ];
        Ok(RecordBatch::try_new(self.schemas[AUCTION].clone(), columns)?)
    }

    fn bids(&self, start: u64, end: u64) -> Result<RecordBatch> {
        let pools = &*self.pools;
        let capacity = count_of(start, end, EventKind::Bid);
        let mut auction = Vec::with_capacity(capacity);
        let mut bidder = Vec::with_capacity(capacity);
        let mut price = Vec::with_capacity(capacity);
        let mut date_time = Vec::with_capacity(capacity);
        let mut channel = StringBuilder::with_capacity(capacity, capacity * 10);
        let mut url = StringBuilder::with_capacity(capacity, capacity * 72);
        let mut clock = EventClock::at(start, self.rate);
        for n in start..end {
            if model::kind(n) == EventKind::Bid {
                let mut rng = EventRng::for_event(self.seed, n);
                let base0_auction = if rng.below(model::HOT_AUCTION_RATIO) > 0 {
                    model::last_base0_auction_id(n) / model::HOT_AUCTION_GROUP * model::HOT_AUCTION_GROUP
                } else {
                    model::next_base0_auction_id(n, &mut rng)
                };
                auction.push(base0_auction + model::FIRST_AUCTION_ID);
                let base0_bidder = if rng.below(model::HOT_BIDDERS_RATIO) > 0 {
                    model::last_base0_person_id(n) / model::HOT_BIDDER_GROUP * model::HOT_BIDDER_GROUP + 1
                } else {
                    model::next_base0_person_id(n, &mut rng)
                };
                bidder.push(base0_bidder + model::FIRST_PERSON_ID);
                price.push(model::next_price(&mut rng));
                let pick = pools.channel_index(&mut rng);
                channel.append_value(&pools.channels[pick]);
                url.append_value(&pools.urls[pick]);
                date_time.push(clock.now_ms());
            }
            clock.tick();
        }
        let rows = auction.len();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(auction)),
            Arc::new(Int64Array::from(bidder)),
            Arc::new(Int64Array::from(price)),
            Arc::new(channel.finish()),
            Arc::new(url.finish()),
            Arc::new(TimestampMillisecondArray::from(date_time)),
            empty_strings(rows),
        ];
        Ok(RecordBatch::try_new(self.schemas[BID].clone(), columns)?)
    }
}

/// How many events of `kind` lie in `start..end`.
fn count_of(start: u64, end: u64, kind: EventKind) -> usize {
    let per_period = match kind {
        EventKind::Person => model::PERSON_PROPORTION,
        EventKind::Auction => model::AUCTION_PROPORTION,
        EventKind::Bid => model::BID_PROPORTION,
    };
    let events = end.saturating_sub(start);
    (events / model::PROPORTION_DENOMINATOR * per_period + per_period) as usize
}

/// Fills `out` with a random lowercase word of 3 to `max_len` letters and returns it.
fn random_word<'a>(rng: &mut EventRng, max_len: u64, out: &'a mut [u8]) -> &'a [u8] {
    let len = (3 + rng.below(max_len.saturating_sub(2))) as usize;
    let bits = rng.next_u64();
    for (i, byte) in out[..len].iter_mut().enumerate() {
        *byte = b'a' + ((bits >> (i * 5)) % 26) as u8;
    }
    &out[..len]
}

/// Text we wrote ourselves from ASCII letters and digits.
fn ascii(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap_or("")
}

/// A column of `rows` empty strings (the `extra` padding of the reference generator).
fn empty_strings(rows: usize) -> ArrayRef {
    Arc::new(StringArray::new(OffsetBuffer::new_zeroed(rows), Buffer::from_vec(Vec::<u8>::new()), None))
}

/// Strings the generator picks from, built once per source from its seed.
struct Pools {
    names: Vec<String>,
    cities: Vec<String>,
    states: Vec<String>,
    /// The four hot channels, then `channel-0` .. `channel-9999`.
    channels: Vec<String>,
    /// The URL of each channel, same order.
    urls: Vec<String>,
    /// Random lowercase words and spaces that item names and descriptions are cut from.
    text: String,
}

const FIRST_NAMES: &[&str] =
    &["Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter"];
const LAST_NAMES: &[&str] =
    &["Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris"];
const US_CITIES: &[&str] = &[
    "Phoenix",
    "Los Angeles",
    "San Francisco",
    "Boise",
    "Portland",
    "Bend",
    "Redmond",
    "Seattle",
    "Kent",
    "Cheyenne",
];
const US_STATES: &[&str] = &["AZ", "CA", "ID", "OR", "WA", "WY"];
const HOT_CHANNELS: &[&str] = &["Google", "Facebook", "Baidu", "Apple"];
/// Non-hot channels.
const CHANNELS_NUMBER: u64 = 10_000;
/// One in this many bids comes through a random channel; the others through a hot one.
const HOT_CHANNELS_RATIO: u64 = 2;
const TEXT_POOL_LEN: usize = 4096;

impl Pools {
    fn new(seed: u64) -> Self {
        let mut rng = EventRng::for_event(seed, u64::MAX);
        let names = FIRST_NAMES
            .iter()
            .flat_map(|first| LAST_NAMES.iter().map(move |last| format!("{first} {last}")))
            .collect();
        let mut channels: Vec<String> = HOT_CHANNELS.iter().map(|c| (*c).to_owned()).collect();
        let mut urls: Vec<String> = (0..HOT_CHANNELS.len()).map(|_| base_url(&mut rng)).collect();
        for number in 0..CHANNELS_NUMBER as u32 {
            channels.push(format!("channel-{number}"));
            urls.push(format!(
                "{}&channel_id={}",
                base_url(&mut rng),
                (number.reverse_bits() as i32).unsigned_abs()
            ));
        }
        let text = (0..TEXT_POOL_LEN)
            .map(|_| match rng.below(7) {
                0 => ' ',
                _ => char::from(b'a' + rng.below(26) as u8),
            })
            .collect();
        Self {
            names,
            cities: US_CITIES.iter().map(|c| (*c).to_owned()).collect(),
            states: US_STATES.iter().map(|c| (*c).to_owned()).collect(),
            channels,
            urls,
            text,
        }
    }

    fn pick<'a>(&self, pool: &'a [String], rng: &mut EventRng) -> &'a str {
        &pool[rng.below(pool.len() as u64) as usize]
    }

    /// Index into `channels`/`urls`: a hot channel, or a random one of the others.
    #[inline]
    fn channel_index(&self, rng: &mut EventRng) -> usize {
        let bits = rng.next_u64();
        if !bits.is_multiple_of(HOT_CHANNELS_RATIO) {
            ((bits >> 8) % HOT_CHANNELS.len() as u64) as usize
        } else {
            HOT_CHANNELS.len() + ((bits >> 8) % CHANNELS_NUMBER) as usize
        }
    }

    /// A slice of the text pool of `min..=max` bytes.
    fn text(&self, rng: &mut EventRng, min: usize, max: usize) -> &str {
        let len = min + rng.below((max - min + 1) as u64) as usize;
        let start = rng.below((TEXT_POOL_LEN - len) as u64) as usize;
        &self.text[start..start + len]
    }
}

/// `https://www.nexmark.com/<word>/<word>/<word>/item.htm?query=1`, as in the reference.
fn base_url(rng: &mut EventRng) -> String {
    let mut word = || {
        let mut buffer = [0u8; 5];
        for byte in &mut buffer {
            *byte = match rng.below(27) {
                26 => b'_',
                letter => b'a' + letter as u8,
            };
        }
        ascii(&buffer).to_owned()
    };
    format!("https://www.nexmark.com/{}/{}/{}/item.htm?query=1", word(), word(), word())
}

fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, None)
}

/// Schema of the `person` output.
pub fn person_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("email_address", DataType::Utf8, false),
        Field::new("credit_card", DataType::Utf8, false),
        Field::new("city", DataType::Utf8, false),
        Field::new("state", DataType::Utf8, false),
        Field::new("date_time", timestamp(), false),
        Field::new("extra", DataType::Utf8, false),
    ]))
}

/// Schema of the `auction` output.
pub fn auction_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("item_name", DataType::Utf8, false),
        Field::new("description", DataType::Utf8, false),
        Field::new("initial_bid", DataType::Int64, false),
        Field::new("reserve", DataType::Int64, false),
        Field::new("date_time", timestamp(), false),
        Field::new("expires", timestamp(), false),
        Field::new("seller", DataType::Int64, false),
        Field::new("category", DataType::Int64, false),
        Field::new("extra", DataType::Utf8, false),
    ]))
}

/// Schema of the `bid` output.
pub fn bid_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("auction", DataType::Int64, false),
        Field::new("bidder", DataType::Int64, false),
        Field::new("price", DataType::Int64, false),
        Field::new("channel", DataType::Utf8, false),
        Field::new("url", DataType::Utf8, false),
        Field::new("date_time", timestamp(), false),
        Field::new("extra", DataType::Utf8, false),
    ]))
}
