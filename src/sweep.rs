//! `herald replay --sweep`: what each stability window would have done to a log (DESIGN
//! §12), so an operator picks W from their own records.
//!
//! Each window's run is compared with the run at W = 0, where every change is emitted at
//! once: the events it avoided, and how much later each state it emitted came out than the
//! same key's same state did at W = 0. `stable_at − at` alone would be W for every event.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::model::{ClusterEvent, Nanos, Timestamp};
use crate::replay::Summary;
use crate::sinks::encoding::{key, state};

/// One window's figures.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Row {
    /// The window, as given (`500ms`).
    pub window: String,
    pub window_ns: i64,
    pub events: u64,
    pub by_kind: BTreeMap<&'static str, u64>,
    /// Reverts swallowed inside the window.
    pub suppressed: u64,
    /// Events W = 0 emits that this window does not.
    pub avoided: i64,
    /// Delay of the emitted states against W = 0: median and 99th percentile (nearest
    /// rank), absent when no emitted state has a counterpart.
    pub delay_median_ns: Option<i64>,
    pub delay_p99_ns: Option<i64>,
}

/// A key's states as W = 0 emitted them, by `at`: (state, at, stable_at).
type Baseline = HashMap<String, Vec<(String, Timestamp, Timestamp)>>;

fn baseline(events: &[ClusterEvent]) -> Baseline {
    let mut by_key: Baseline = HashMap::new();
    for e in events {
        by_key.entry(key(e)).or_default().push((state(e), e.at, e.stable_at));
    }
    for states in by_key.values_mut() {
        states.sort_by_key(|(_, at, _)| *at);
    }
    by_key
}

/// The row of `window`, whose run emitted `events` with `summary`, against the W = 0 run's
/// `zero` events.
pub fn row(
    window: Nanos,
    events: &[ClusterEvent],
    summary: &Summary,
    zero: &[ClusterEvent],
) -> Row {
    row_against(window, events, summary, zero.len(), &baseline(zero))
}

/// Every window's row against one W = 0 run.
pub fn rows(runs: &[(Nanos, Vec<ClusterEvent>, Summary)], zero: &[ClusterEvent]) -> Vec<Row> {
    let base = baseline(zero);
    runs.iter().map(|(w, events, s)| row_against(*w, events, s, zero.len(), &base)).collect()
}

fn row_against(
    window: Nanos,
    events: &[ClusterEvent],
    summary: &Summary,
    zero_events: usize,
    base: &Baseline,
) -> Row {
    let mut by_kind = BTreeMap::new();
    let mut delays = Vec::with_capacity(events.len());
    for e in events {
        *by_kind.entry(e.kind.as_str()).or_insert(0) += 1;
        let Some(states) = base.get(&key(e)) else { continue };
        let s = state(e);
        // The same state's latest emission at W = 0 that began no later than this one: a
        // flap swallowed here was emitted there, then its state came back.
        let until = states.partition_point(|(_, at, _)| *at <= e.at);
        let at_zero = states[..until].iter().rev().find(|(z, _, _)| *z == s);
        if let Some((_, _, stable_zero)) = at_zero {
            delays.push(e.stable_at.saturating_sub(*stable_zero).0.max(0));
        }
    }
    delays.sort_unstable();
    let rank = |p: f64| -> Option<i64> {
        let n = delays.len();
        // Nearest rank: the smallest value with at least p of the values at or below it.
        let i = ((p * n as f64).ceil() as usize).clamp(1, n.max(1)) - 1;
        delays.get(i).copied()
    };
    Row {
        window: duration(window.0),
        window_ns: window.0,
        events: events.len() as u64,
        by_kind,
        suppressed: summary.suppressed,
        avoided: i64::try_from(zero_events).unwrap_or(i64::MAX)
            - i64::try_from(events.len()).unwrap_or(i64::MAX),
        delay_median_ns: rank(0.5),
        delay_p99_ns: rank(0.99),
    }
}

/// A duration as an operator writes one: `0`, `750µs`, `500ms`, `2s`, `1.250s`.
pub fn duration(ns: i64) -> String {
    match ns {
        0 => "0".to_string(),
        n if n % 1_000_000_000 == 0 => format!("{}s", n / 1_000_000_000),
        n if n >= 1_000_000_000 => format!("{:.3}s", n as f64 / 1e9),
        n if n % 1_000_000 == 0 => format!("{}ms", n / 1_000_000),
        n if n >= 1_000_000 => format!("{:.1}ms", n as f64 / 1e6),
        n if n >= 1_000 => format!("{}µs", n / 1_000),
        n => format!("{n}ns"),
    }
}

/// The short name of a kind in a table's header: unique without its family.
fn short(kind: &str) -> &str {
    match kind {
        "node.has_leader" | "node.is_leaderless" | "node.down" | "node.up" => kind,
        k => k.split_once('.').map_or(k, |(_, rest)| rest),
    }
}

/// The rows as an aligned table, one row per window and a column per kind seen.
pub fn table(rows: &[Row]) -> String {
    let mut kinds: Vec<&str> = rows.iter().flat_map(|r| r.by_kind.keys().copied()).collect();
    kinds.sort_unstable();
    kinds.dedup();
    let delay = |d: Option<i64>| d.map_or("-".to_string(), duration);
    let mut header: Vec<String> =
        ["window", "events", "suppressed", "avoided", "delay p50", "delay p99"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    header.extend(kinds.iter().map(|k| short(k).to_string()));
    let mut lines = vec![header];
    for r in rows {
        let mut cells = vec![
            r.window.clone(),
            r.events.to_string(),
            r.suppressed.to_string(),
            r.avoided.to_string(),
            delay(r.delay_median_ns),
            delay(r.delay_p99_ns),
        ];
        cells.extend(kinds.iter().map(|k| r.by_kind.get(k).copied().unwrap_or(0).to_string()));
        lines.push(cells);
    }
    let columns = lines[0].len();
    let widths: Vec<usize> = (0..columns)
        .map(|c| lines.iter().map(|l| l[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for l in &lines {
        let cells: Vec<String> = l
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (cell, w))| {
                let pad = w - cell.chars().count();
                // The window reads left to right; figures line up on the right.
                if i == 0 {
                    format!("{cell}{}", " ".repeat(pad))
                } else {
                    format!("{}{cell}", " ".repeat(pad))
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::EventKind;

    fn router(kind: EventKind, at: i64, stable_at: i64) -> ClusterEvent {
        let mut e = ClusterEvent::new(kind, "c", Timestamp(at), Timestamp(stable_at));
        e.router = Some("r1".into());
        e
    }

    /// The delay is measured against the same state at W = 0, not `stable_at − at`: a flap
    /// swallowed by the window does not count as the state's delay.
    #[test]
    fn the_delay_is_against_the_same_state_at_w0() {
        let s = 1_000_000_000;
        let zero = vec![
            router(EventKind::RouterOnline, 0, 0),
            router(EventKind::RouterOffline, 10 * s, 10 * s),
            router(EventKind::RouterOnline, 11 * s, 11 * s),
            router(EventKind::RouterOffline, 20 * s, 20 * s),
        ];
        // W = 2s: the offline at 10s was a flap, the one at 20s is out at 22s.
        let two = vec![
            router(EventKind::RouterOnline, 0, 2 * s),
            router(EventKind::RouterOffline, 20 * s, 22 * s),
        ];
        let summary = Summary { suppressed: 1, ..Summary::default() };
        let r = row(Nanos(2 * s), &two, &summary, &zero);
        assert_eq!(r.window, "2s");
        assert_eq!(r.avoided, 2);
        assert_eq!(r.suppressed, 1);
        assert_eq!(r.delay_median_ns, Some(2 * s));
        assert_eq!(r.delay_p99_ns, Some(2 * s));
        assert_eq!(r.by_kind.get("router.offline"), Some(&1));
        let z = row(Nanos(0), &zero, &Summary::default(), &zero);
        assert_eq!((z.avoided, z.delay_median_ns, z.delay_p99_ns), (0, Some(0), Some(0)));
    }

    #[test]
    fn nearest_rank_percentiles() {
        let zero: Vec<ClusterEvent> =
            (0..100).map(|i| router(EventKind::RouterOnline, i * 10, i * 10)).collect();
        // Each emitted 1..=100 ns after its counterpart.
        let late: Vec<ClusterEvent> =
            (0..100).map(|i| router(EventKind::RouterOnline, i * 10, i * 10 + i + 1)).collect();
        let r = row(Nanos(1), &late, &Summary::default(), &zero);
        assert_eq!(r.delay_median_ns, Some(50));
        assert_eq!(r.delay_p99_ns, Some(99));
    }

    #[test]
    fn the_table_has_a_row_per_window_and_a_column_per_kind() {
        let zero = vec![router(EventKind::RouterOnline, 0, 0)];
        let rows = rows(
            &[
                (Nanos(0), zero.clone(), Summary::default()),
                (Nanos(500_000_000), vec![], Summary::default()),
            ],
            &zero,
        );
        let t = table(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert!(lines[0].starts_with("window") && lines[0].ends_with("online"), "{t}");
        assert!(lines[1].starts_with("0 "), "{t}");
        assert!(lines[2].starts_with("500ms"), "{t}");
        assert_eq!(duration(1_250_000_000), "1.250s");
    }
}
