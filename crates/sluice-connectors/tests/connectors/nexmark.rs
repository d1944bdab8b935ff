use std::collections::HashSet;

use serde_json::json;
use sluice_connectors::nexmark::{AUCTION, BID, PERSON};

use crate::support::*;

fn events(n: u64, seed: u64) -> std::sync::Arc<dyn sluice_runtime::connector::Source> {
    let (_dir, base) = temp();
    source("nexmark", json!({"events": n, "seed": seed}), None, false, &base)
}

#[test]
fn same_seed_same_events_and_other_seed_other_events() {
    let (_dir, base) = temp();
    let dl = base.join("dl.jsonl");
    let a = union(events(5000, 1).as_ref(), 1, BID, &dl);
    let b = union(events(5000, 1).as_ref(), 1, BID, &dl);
    let c = union(events(5000, 2).as_ref(), 1, BID, &dl);
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn union_over_workers_equals_one_worker() {
    let (_dir, base) = temp();
    let dl = base.join("dl.jsonl");
    let source = events(20_000, 7);
    for output in [PERSON, AUCTION, BID] {
        let one = union(source.as_ref(), 1, output, &dl);
        assert!(!one.is_empty());
        for peers in [2, 3] {
            assert_eq!(union(source.as_ref(), peers, output, &dl), one, "output {output}, {peers} workers");
        }
    }
}

#[test]
fn proportions_are_one_three_forty_six() {
    let (_dir, base) = temp();
    let drained = drain(events(50_000, 0).as_ref(), 0, 1, vec![true; 3], &base.join("dl"));
    assert_eq!([drained.rows(PERSON), drained.rows(AUCTION), drained.rows(BID)], [1000, 3000, 46_000]);
}

#[test]
fn unused_outputs_are_skipped_but_numbering_is_kept() {
    let (_dir, base) = temp();
    let source = events(10_000, 3);
    let all = union(source.as_ref(), 1, BID, &base.join("dl"));
    let only_bids = drain(source.as_ref(), 0, 1, vec![false, false, true], &base.join("dl"));
    assert_eq!(only_bids.rows(PERSON) + only_bids.rows(AUCTION), 0);
    assert_eq!(sorted_lines(&only_bids.outputs[BID]), all);
}

#[test]
fn bids_refer_to_people_and_auctions_that_exist_or_are_about_to() {
    let (_dir, base) = temp();
    let drained = drain(events(100_000, 5).as_ref(), 0, 1, vec![true; 3], &base.join("dl"));
    let ids = |output: usize, column: &str| -> Vec<i64> {
        json_values(&drained.outputs[output]).iter().map(|row| row[column].as_i64().unwrap()).collect()
    };
    let people: HashSet<i64> = ids(PERSON, "id").into_iter().collect();
    let auctions: HashSet<i64> = ids(AUCTION, "id").into_iter().collect();
    let max_person = *people.iter().max().unwrap();
    let max_auction = *auctions.iter().max().unwrap();
    assert_eq!((people.len(), *people.iter().min().unwrap()), (2000, 1000));
    assert_eq!((auctions.len(), *auctions.iter().min().unwrap()), (6000, 1000));
    for bidder in ids(BID, "bidder") {
        assert!((1000..=max_person + 10).contains(&bidder), "bidder {bidder}");
    }
    for auction in ids(BID, "auction") {
        assert!((1000..=max_auction + 10).contains(&auction), "auction {auction}");
    }
    for seller in ids(AUCTION, "seller") {
        assert!((1000..=max_person + 10).contains(&seller), "seller {seller}");
    }
}

/// The reference generator's formulas, written out independently.
#[test]
fn fields_follow_the_reference_formulas() {
    let (_dir, base) = temp();
    let drained = drain(events(200, 0).as_ref(), 0, 1, vec![true; 3], &base.join("dl"));
    let people = json_values(&drained.outputs[PERSON]);
    let auctions = json_values(&drained.outputs[AUCTION]);
    let bids = json_values(&drained.outputs[BID]);
    // 200 events: persons at 0, 50, 100, 150 with ids 1000..1003; event time = base + n * 0.1 ms.
    let person_times: Vec<(i64, &str)> =
        people.iter().map(|p| (p["id"].as_i64().unwrap(), p["date_time"].as_str().unwrap())).collect();
    assert_eq!(
        person_times,
        [
            (1000, "2015-07-15T00:00:00"),
            (1001, "2015-07-15T00:00:00.005"),
            (1002, "2015-07-15T00:00:00.010"),
            (1003, "2015-07-15T00:00:00.015"),
        ]
    );
    assert_eq!(auctions.len(), 12);
    for auction in &auctions {
        let category = auction["category"].as_i64().unwrap();
        assert!((10..15).contains(&category));
        assert!(auction["reserve"].as_i64() > auction["initial_bid"].as_i64());
        assert!(auction["expires"].as_str() > auction["date_time"].as_str());
    }
    for person in &people {
        let card = person["credit_card"].as_str().unwrap();
        assert!(
            card.len() == 19
                && card.split(' ').all(|g| g.len() == 4 && g.bytes().all(|b| b.is_ascii_digit()))
        );
        let email = person["email_address"].as_str().unwrap();
        assert!(email.contains('@') && email.ends_with(".com"), "{email}");
    }
    assert_eq!(bids.len(), 184);
    for bid in &bids {
        let price = bid["price"].as_i64().unwrap();
        assert!((100..=100_000_000).contains(&price));
        assert!(bid["url"].as_str().unwrap().starts_with("https://www.nexmark.com/"));
    }
}

#[test]
fn events_per_second_paces_the_output() {
    let (_dir, base) = temp();
    let source = source("nexmark", json!({"events": 400, "events_per_second": 2000}), None, false, &base);
    let started = std::time::Instant::now();
    let drained = drain(source.as_ref(), 0, 1, vec![true; 3], &base.join("dl"));
    let elapsed = started.elapsed();
    assert_eq!(drained.rows(PERSON) + drained.rows(AUCTION) + drained.rows(BID), 400);
    assert!(elapsed >= std::time::Duration::from_millis(150), "{elapsed:?}");
}

/// Throughput of the bid generator: `cargo test --release -p sluice-connectors -- --ignored --nocapture`.
#[test]
#[ignore]
fn bid_generator_throughput() {
    let generator =
        sluice_connectors::nexmark::Generator::new(&Default::default()).with_used([false, false, true]);
    let mut out = Vec::new();
    let events = 50_000_000u64;
    let started = std::time::Instant::now();
    let mut rows = 0;
    let mut start = 0;
    while start < events {
        generator.generate(start, start + 8192, &mut out).unwrap();
        rows += out.drain(..).map(|b| b.batch.num_rows()).sum::<usize>();
        start += 8192;
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "nexmark: {:.1} M events/s, {:.1} M bids/s on one core",
        events as f64 / seconds / 1e6,
        rows as f64 / seconds / 1e6
    );
}
