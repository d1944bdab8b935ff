//! The processor graph: dependency order and cycles. Pure functions over names, so they work on
//! a half-parsed spec (to report cycles next to other errors) and on a finished [`Pipeline`].
//!
//! Only processors matter here: sources have no inputs and sinks cannot be inputs, so every
//! cycle runs through processors alone. Inputs naming anything else are ignored.
//!
//! [`Pipeline`]: crate::Pipeline

use std::collections::{BTreeSet, HashMap, VecDeque};

/// One processor: its name and the node names of its inputs, in spec order. An empty name
/// stands for one that could not be read.
pub(crate) struct Node<'a> {
    pub name: &'a str,
    pub inputs: Vec<&'a str>,
}

/// A cycle among processors, in data-flow order: `nodes[0]` feeds `nodes[1]`, ..., and the last
/// feeds `nodes[0]` through `nodes[0]`'s input number `closing_input`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Cycle {
    pub nodes: Vec<usize>,
    pub closing_input: usize,
}

/// For each processor, the processors it feeds, in ascending order and once each. Edges to
/// itself are left out: a self-reference is reported on its own, not as a cycle.
fn consumers(nodes: &[Node<'_>]) -> Vec<Vec<usize>> {
    let index = name_index(nodes);
    let mut consumers = vec![BTreeSet::new(); nodes.len()];
    for (consumer, node) in nodes.iter().enumerate() {
        for input in &node.inputs {
            match index.get(input) {
                Some(&producer) if producer != consumer => {
                    consumers[producer].insert(consumer);
                }
                _ => {}
            }
        }
    }
    consumers.into_iter().map(|set| set.into_iter().collect()).collect()
}

/// Name → index of the first processor with that name (duplicates are reported elsewhere).
/// Empty names stand for processors or inputs that could not be read; they match nothing.
fn name_index<'a>(nodes: &[Node<'a>]) -> HashMap<&'a str, usize> {
    let mut index = HashMap::new();
    for (i, node) in nodes.iter().enumerate().filter(|(_, node)| !node.name.is_empty()) {
        index.entry(node.name).or_insert(i);
    }
    index
}

/// Processor indices in an order where each comes after the processors it reads, taking the
/// lowest ready index first so independent processors keep spec order. Processors on or behind a
/// cycle cannot be ordered; they follow the rest in spec order.
pub(crate) fn topological_order(nodes: &[Node<'_>]) -> Vec<usize> {
    let consumers = consumers(nodes);
    let mut waiting_for = vec![0usize; nodes.len()];
    for consumer in consumers.iter().flatten() {
        waiting_for[*consumer] += 1;
    }
    let mut ready: BTreeSet<usize> = (0..nodes.len()).filter(|&i| waiting_for[i] == 0).collect();
    let mut order = Vec::with_capacity(nodes.len());
    while let Some(next) = ready.pop_first() {
        order.push(next);
        for &consumer in &consumers[next] {
            waiting_for[consumer] -= 1;
            if waiting_for[consumer] == 0 {
                ready.insert(consumer);
            }
        }
    }
    if order.len() < nodes.len() {
        let placed: BTreeSet<usize> = order.iter().copied().collect();
        order.extend((0..nodes.len()).filter(|i| !placed.contains(i)));
    }
    order
}

/// Cycles among processors, one per processor not yet on a reported cycle: for each such
/// processor in spec order, the shortest cycle through it, if any. Every processor on a cycle is
/// thus on at least one reported cycle, and there are at most as many cycles as processors.
pub(crate) fn cycles(nodes: &[Node<'_>]) -> Vec<Cycle> {
    let consumers = consumers(nodes);
    let index = name_index(nodes);
    let mut covered = vec![false; nodes.len()];
    let mut cycles = Vec::new();
    for start in 0..nodes.len() {
        if covered[start] {
            continue;
        }
        let Some(path) = shortest_cycle(&consumers, start) else {
            continue;
        };
        let last = path[path.len() - 1];
        let closing_input = nodes[start].inputs.iter().position(|input| index.get(input) == Some(&last));
        for &node in &path {
            covered[node] = true;
        }
        cycles.push(Cycle { nodes: path, closing_input: closing_input.unwrap_or(0) });
    }
    cycles
}

/// Breadth-first search from `start` along data flow back to `start`; the nodes of the shortest
/// such cycle, starting with `start`.
fn shortest_cycle(consumers: &[Vec<usize>], start: usize) -> Option<Vec<usize>> {
    let mut parent: Vec<Option<usize>> = vec![None; consumers.len()];
    let mut queue = VecDeque::from([start]);
    while let Some(node) = queue.pop_front() {
        for &next in &consumers[node] {
            if next == start {
                let mut path = vec![node];
                while let Some(previous) = parent[*path.last()?] {
                    path.push(previous);
                }
                path.reverse();
                return Some(path);
            }
            if parent[next].is_none() {
                parent[next] = Some(node);
                queue.push_back(next);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes<'a>(spec: &[(&'a str, &[&'a str])]) -> Vec<Node<'a>> {
        spec.iter().map(|(name, inputs)| Node { name, inputs: inputs.to_vec() }).collect()
    }

    #[test]
    fn orders_producers_before_consumers_and_keeps_spec_order_otherwise() {
        let graph = nodes(&[("c", &["b"]), ("b", &["a"]), ("x", &["src"]), ("a", &["src"])]);
        assert_eq!(topological_order(&graph), vec![2, 3, 1, 0]);
    }

    #[test]
    fn unorderable_processors_follow_the_rest() {
        let graph = nodes(&[("a", &["b"]), ("b", &["a"]), ("c", &["a"]), ("d", &[])]);
        assert_eq!(topological_order(&graph), vec![3, 0, 1, 2]);
    }

    #[test]
    fn finds_one_shortest_cycle_per_uncovered_processor() {
        // a <-> b, and b -> c -> d -> b; e is downstream of a cycle but not on one.
        let graph = nodes(&[("a", &["b"]), ("b", &["a", "d"]), ("c", &["b"]), ("d", &["c"]), ("e", &["a"])]);
        assert_eq!(
            cycles(&graph),
            vec![
                Cycle { nodes: vec![0, 1], closing_input: 0 },
                Cycle { nodes: vec![2, 3, 1], closing_input: 0 },
            ]
        );
    }

    #[test]
    fn self_references_are_not_cycles() {
        let graph = nodes(&[("a", &["a", "src"])]);
        assert_eq!(cycles(&graph), vec![]);
        assert_eq!(topological_order(&graph), vec![0]);
    }

    #[test]
    fn closing_input_points_at_the_reference_that_closes_the_cycle() {
        let graph = nodes(&[("a", &["src", "c"]), ("b", &["a"]), ("c", &["b"])]);
        assert_eq!(cycles(&graph), vec![Cycle { nodes: vec![0, 1, 2], closing_input: 1 }]);
    }
}
