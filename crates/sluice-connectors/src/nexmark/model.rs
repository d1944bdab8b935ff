//! The Nexmark model, as in the reference generator of Apache Beam and the Flink Nexmark suite:
//! which event number is a person, an auction or a bid, which ids they get and which ids a bid
//! or an auction may refer to. Pure functions of the event number.

/// Id of the first person.
pub const FIRST_PERSON_ID: i64 = 1000;
/// Id of the first auction.
pub const FIRST_AUCTION_ID: i64 = 1000;
/// Id of the first category.
pub const FIRST_CATEGORY_ID: i64 = 10;
/// Number of categories.
pub const NUM_CATEGORIES: u64 = 5;
/// Persons per proportion period.
pub const PERSON_PROPORTION: u64 = 1;
/// Auctions per proportion period.
pub const AUCTION_PROPORTION: u64 = 3;
/// Bids per proportion period.
pub const BID_PROPORTION: u64 = 46;
/// Events per proportion period.
pub const PROPORTION_DENOMINATOR: u64 = PERSON_PROPORTION + AUCTION_PROPORTION + BID_PROPORTION;
/// People among whom sellers and bidders are picked.
pub const NUM_ACTIVE_PEOPLE: i64 = 1000;
/// Auctions among which bids are picked.
pub const NUM_IN_FLIGHT_AUCTIONS: i64 = 100;
/// Ids beyond the last person that may be picked (people who will exist soon).
pub const PERSON_ID_LEAD: i64 = 10;
/// Ids beyond the last auction that may be picked.
pub const AUCTION_ID_LEAD: i64 = 10;
/// One in this many auctions has a random seller; the others a hot seller.
pub const HOT_SELLERS_RATIO: u64 = 4;
/// One in this many bids is for a random auction; the others for a hot auction.
pub const HOT_AUCTION_RATIO: u64 = 2;
/// One in this many bids is by a random bidder; the others by a hot bidder.
pub const HOT_BIDDERS_RATIO: u64 = 4;
/// Hot sellers are the first person of each group of this many.
pub const HOT_SELLER_GROUP: i64 = 100;
/// Hot auctions are the first auction of each group of this many.
pub const HOT_AUCTION_GROUP: i64 = 100;
/// Hot bidders are the second person of each group of this many.
pub const HOT_BIDDER_GROUP: i64 = 100;
/// Base event time: 2015-07-15T00:00:00Z in milliseconds.
pub const BASE_TIME_MS: i64 = 1_436_918_400_000;
/// Nominal events per second when none is configured.
pub const DEFAULT_EVENT_RATE: u64 = 10_000;

/// The kind of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A new person.
    Person,
    /// A new auction.
    Auction,
    /// A bid.
    Bid,
}

/// Which kind event `n` is.
pub fn kind(n: u64) -> EventKind {
    let offset = n % PROPORTION_DENOMINATOR;
    if offset < PERSON_PROPORTION {
        EventKind::Person
    } else if offset < PERSON_PROPORTION + AUCTION_PROPORTION {
        EventKind::Auction
    } else {
        EventKind::Bid
    }
}

/// 0-based id of the last person generated at or before event `n`.
pub fn last_base0_person_id(n: u64) -> i64 {
    let epoch = n / PROPORTION_DENOMINATOR;
    let offset = n % PROPORTION_DENOMINATOR;
    let offset = if offset >= PERSON_PROPORTION { PERSON_PROPORTION - 1 } else { offset };
    (epoch * PERSON_PROPORTION + offset) as i64
}

/// 0-based id of the last auction generated at or before event `n` (-1 before the first).
pub fn last_base0_auction_id(n: u64) -> i64 {
    let mut epoch = (n / PROPORTION_DENOMINATOR) as i64;
    let mut offset = (n % PROPORTION_DENOMINATOR) as i64;
    let person = PERSON_PROPORTION as i64;
    let auction = AUCTION_PROPORTION as i64;
    if offset < person {
        epoch -= 1;
        offset = auction - 1;
    } else if offset >= person + auction {
        offset = auction - 1;
    } else {
        offset -= person;
    }
    epoch * auction + offset
}

/// A random 0-based person id among the active people, plus a few who will exist soon.
pub fn next_base0_person_id(n: u64, rng: &mut EventRng) -> i64 {
    let num_people = last_base0_person_id(n) + 1;
    let active = num_people.min(NUM_ACTIVE_PEOPLE);
    num_people - active + rng.below((active + PERSON_ID_LEAD) as u64) as i64
}

/// A random 0-based auction id among those likely in flight, plus a few that will exist soon.
pub fn next_base0_auction_id(n: u64, rng: &mut EventRng) -> i64 {
    let max_auction = last_base0_auction_id(n);
    let min_auction = (max_auction - NUM_IN_FLIGHT_AUCTIONS).max(0);
    min_auction + rng.below((max_auction - min_auction + 1 + AUCTION_ID_LEAD) as u64) as i64
}

/// A price in cents, log-uniform between 1 and 1,000,000 dollars.
pub fn next_price(rng: &mut EventRng) -> i64 {
    // 10^(6u) * 100, as exp(6u ln 10) * 100.
    ((rng.unit() * 6.0 * std::f64::consts::LN_10).exp() * 100.0).round() as i64
}

/// Events generated in the time an auction should stay open on average: the time to generate
/// the next `NUM_IN_FLIGHT_AUCTIONS` auctions.
pub fn auction_horizon_events() -> u64 {
    NUM_IN_FLIGHT_AUCTIONS as u64 * PROPORTION_DENOMINATOR / AUCTION_PROPORTION
}

/// Event time of event `n` at a nominal `rate` of events per second.
pub fn event_time_ms(n: u64, rate: u64) -> i64 {
    BASE_TIME_MS + (u128::from(n) * 1000 / u128::from(rate.max(1))) as i64
}

/// Event times of consecutive events without a division per event.
#[derive(Debug, Clone)]
pub struct EventClock {
    rate: u64,
    whole: i64,
    remainder: u64,
    step_whole: i64,
    step_remainder: u64,
}

impl EventClock {
    /// A clock positioned at event `n`.
    pub fn at(n: u64, rate: u64) -> Self {
        let rate = rate.max(1);
        let scaled = u128::from(n) * 1000;
        Self {
            rate,
            whole: BASE_TIME_MS + (scaled / u128::from(rate)) as i64,
            remainder: (scaled % u128::from(rate)) as u64,
            step_whole: (1000 / rate) as i64,
            step_remainder: 1000 % rate,
        }
    }

    /// The current event's time.
    #[inline]
    pub fn now_ms(&self) -> i64 {
        self.whole
    }

    /// Moves to the next event.
    #[inline]
    pub fn tick(&mut self) {
        self.whole += self.step_whole;
        self.remainder += self.step_remainder;
        if self.remainder >= self.rate {
            self.remainder -= self.rate;
            self.whole += 1;
        }
    }
}

/// A small, fast random generator (wyrand) seeded from the source seed and the event number,
/// so an event's content does not depend on which worker generates it.
#[derive(Debug, Clone)]
pub struct EventRng(u64);

impl EventRng {
    /// The generator for event `n` under `seed`.
    #[inline]
    pub fn for_event(seed: u64, n: u64) -> Self {
        Self(mix(seed ^ mix(n.wrapping_add(0x9e37_79b9_7f4a_7c15))))
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0xa076_1d64_78bd_642f);
        let t = u128::from(self.0) * u128::from(self.0 ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) ^ t) as u64
    }

    /// Uniform in `0..bound` (0 when `bound` is 0).
    #[inline]
    pub fn below(&mut self, bound: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }

    /// Uniform in `[0, 1)`.
    #[inline]
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// splitmix64's finaliser.
#[inline]
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_reference_formulas() {
        // Event 0 is person 0, events 1..=3 auctions 0..=2, event 50 person 1, event 51 auction 3.
        assert_eq!(kind(0), EventKind::Person);
        assert_eq!((1..4).map(kind).collect::<Vec<_>>(), [EventKind::Auction; 3]);
        assert_eq!(kind(4), EventKind::Bid);
        assert_eq!(kind(50), EventKind::Person);
        assert_eq!(last_base0_person_id(0), 0);
        assert_eq!(last_base0_person_id(49), 0);
        assert_eq!(last_base0_person_id(50), 1);
        assert_eq!(last_base0_auction_id(1), 0);
        assert_eq!(last_base0_auction_id(3), 2);
        assert_eq!(last_base0_auction_id(49), 2);
        assert_eq!(last_base0_auction_id(50), 2);
        assert_eq!(last_base0_auction_id(51), 3);
        assert_eq!(auction_horizon_events(), 1666);
    }

    #[test]
    fn event_time_is_base_plus_delay() {
        assert_eq!(event_time_ms(0, 10_000), BASE_TIME_MS);
        assert_eq!(event_time_ms(10_000, 10_000), BASE_TIME_MS + 1000);
        assert_eq!(event_time_ms(15, 10_000), BASE_TIME_MS + 1);
        for rate in [1, 7, 999, 1000, 3333, 10_000, 1_000_000] {
            let mut clock = EventClock::at(123_456, rate);
            for n in 123_456..125_000 {
                assert_eq!(clock.now_ms(), event_time_ms(n, rate), "rate {rate} event {n}");
                clock.tick();
            }
        }
    }

    #[test]
    fn random_ids_stay_in_range() {
        for n in 4..100_000u64 {
            let mut rng = EventRng::for_event(7, n);
            let person = next_base0_person_id(n, &mut rng);
            let auction = next_base0_auction_id(n, &mut rng);
            assert!((0..=last_base0_person_id(n) + PERSON_ID_LEAD).contains(&person));
            assert!((0..=last_base0_auction_id(n) + AUCTION_ID_LEAD).contains(&auction));
            let price = next_price(&mut rng);
            assert!((100..=100_000_000).contains(&price));
        }
    }
}
