//! `herald replay --timeline FILE.html`: each key's states over time as one self-contained
//! page (DESIGN §12), so an operator choosing a stability window sees what it swallows and
//! what it costs.
//!
//! A lane per key. Its bar is the key's states as W = 0 saw them (every change as it came).
//! A W = 0 change is a *flap* when the window never showed its state then: no event emitted
//! at the configured window reports that key in that state beginning at that instant
//! (`at`), and the state the window was reporting at that instant (its emitted state that
//! began last before) is another. The engine gives an emitted state the `at` of the record
//! that began it, so a change the window let through matches exactly; the return from a
//! swallowed excursion is no flap, the window never left that state. Emitted events are
//! ticks at their `stable_at`, with a thin line back to their `at`: the wait the window
//! costs.
//!
//! The page is HTML with inline SVG and CSS only: no script, no font, no request (its
//! Content-Security-Policy forbids them), so it opens the same from a file anywhere.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write};

use crate::model::{ClusterEvent, Severity, Timestamp};
use crate::sinks::encoding::{key, state, text};
use crate::sweep::duration;

/// Lanes drawn at most: past this the page would take a browser longer to lay out than an
/// operator would scroll; the rest are counted, not drawn.
pub const MAX_LANES: usize = 2000;

const PLOT_W: f64 = 900.0;
const LANE_H: f64 = 24.0;
const BAR_TOP: f64 = 5.0;
const BAR_H: f64 = 14.0;
const AXIS_H: f64 = 30.0;
const FLAPS_W: f64 = 90.0;
/// Width of a character of the 12 px monospace labels, to size the label column.
const CHAR_W: f64 = 7.3;
/// Width of a character of the 10 px state words, to decide whether one fits its segment.
const STATE_CHAR_W: f64 = 6.1;

/// Healthy states, by first appearance: neighbouring states of a lane (ctrl1 then ctrl2 as
/// leader) get different colours, and a state keeps its colour on every lane.
const CALM: [&str; 8] =
    ["#8fd19e", "#9cc3e6", "#b5d98a", "#7cc7c0", "#c3b5ec", "#a8dadc", "#d4e09b", "#b8c7a8"];

fn attention(severity: Severity) -> Option<&'static str> {
    match severity {
        Severity::Info => None,
        Severity::Warning => Some("#f6c85f"),
        Severity::High => Some("#f28e5b"),
        Severity::Critical => Some("#e15759"),
    }
}

struct Change {
    state: String,
    at: Timestamp,
    severity: Severity,
    flap: bool,
}

struct Tick {
    at: Timestamp,
    stable_at: Timestamp,
    line: String,
}

#[derive(Default)]
struct Lane {
    changes: Vec<Change>,
    ticks: Vec<Tick>,
    /// The states the window emitted, by when each began (`at`).
    window: Vec<(Timestamp, String)>,
    flaps: usize,
}

/// Whether the window never showed `state` at `at`: no emitted state began then as this one
/// did, and the state the window was reporting then (the last to begin before) is another.
/// The second half keeps the return from a swallowed excursion from counting: the window
/// never left that state.
fn swallowed(window: &[(Timestamp, String)], at: Timestamp, state: &str) -> bool {
    let upto = window.partition_point(|(t, _)| *t <= at);
    let before = window.get(..upto).unwrap_or_default();
    let exact = before.iter().rev().take_while(|(t, _)| *t == at).any(|(_, s)| s == state);
    let held = before.last().is_some_and(|(_, s)| s == state);
    !(exact || held)
}

/// The time axis: `start` is x = 0 of the plot, `total` its length in nanoseconds, never 0.
/// i128 because the difference of two `i64` timestamps need not fit an `i64`.
struct Axis {
    start: i128,
    total: i128,
    label_w: f64,
}

impl Axis {
    fn x(&self, t: Timestamp) -> f64 {
        let offset = (i128::from(t.0) - self.start).clamp(0, self.total);
        self.label_w + offset as f64 / self.total as f64 * PLOT_W
    }

    fn end_x(&self) -> f64 {
        self.label_w + PLOT_W
    }

    /// The time at `fraction` of the axis, as a timestamp again.
    fn at(&self, fraction: f64) -> Timestamp {
        let t = self.start + (self.total as f64 * fraction) as i128;
        Timestamp(i64::try_from(t).unwrap_or(if t < 0 { i64::MIN } else { i64::MAX }))
    }
}

/// Writes the page of log `title`: a lane per key with its states as W = 0 saw them
/// (`zero`), the suppressed flaps marked, and the events emitted at the configured window
/// (`emitted`) as ticks.
pub fn render(
    out: &mut dyn Write,
    title: &str,
    zero: &[ClusterEvent],
    emitted: &[ClusterEvent],
) -> io::Result<()> {
    // Sorted by key: a cluster's families and a family's subjects sit together.
    let mut lanes: BTreeMap<String, Lane> = BTreeMap::new();
    for e in emitted {
        let lane = lanes.entry(key(e)).or_default();
        lane.window.push((e.at, state(e)));
        lane.ticks.push(Tick { at: e.at, stable_at: e.stable_at, line: text(e, false) });
    }
    for lane in lanes.values_mut() {
        lane.window.sort_by_key(|(at, _)| *at);
        lane.ticks.sort_by_key(|t| t.stable_at);
    }
    for e in zero {
        let lane = lanes.entry(key(e)).or_default();
        let s = state(e);
        let flap = swallowed(&lane.window, e.at, &s);
        lane.flaps += usize::from(flap);
        lane.changes.push(Change { state: s, at: e.at, severity: Severity::of(e.kind), flap });
    }
    for lane in lanes.values_mut() {
        // W = 0 emits in engine order, which is not always record order across reporters;
        // a bar is drawn in time. Stable: changes at one instant keep the engine's order.
        lane.changes.sort_by_key(|c| c.at);
    }
    let flaps: usize = lanes.values().map(|l| l.flaps).sum();

    head(out, title)?;
    writeln!(
        out,
        "<p class=\"counts\"><b>{}</b> keys · <b>{}</b> state changes at W = 0 · <b>{}</b> \
         events emitted at the window · <b class=\"bad\">{flaps}</b> flaps (W = 0 states the \
         window never showed)</p>",
        lanes.len(),
        zero.len(),
        emitted.len()
    )?;
    if lanes.is_empty() {
        out.write_all(
            b"<p class=\"empty\">Nothing to show: the log yielded no state change and no \
              event.</p>\n</body>\n</html>\n",
        )?;
        return Ok(());
    }

    let times = zero.iter().map(|e| e.at).chain(emitted.iter().flat_map(|e| [e.at, e.stable_at]));
    let (first, last) = times.fold((i64::MAX, i64::MIN), |(lo, hi), t| (lo.min(t.0), hi.max(t.0)));
    let span = i128::from(last) - i128::from(first);
    // The last state of a lane runs to the end of the axis: a margin keeps it visible, and
    // gives a log whose events all share one instant an axis of a second.
    let margin = if span > 0 { (span / 40).max(1) } else { 1_000_000_000 };
    let longest = lanes.keys().map(|k| k.chars().count()).max().unwrap_or(0);
    let axis = Axis {
        start: i128::from(first),
        total: span + margin,
        label_w: (longest as f64 * CHAR_W + 16.0).clamp(160.0, 440.0),
    };

    let span_ns = i64::try_from(span).unwrap_or(i64::MAX);
    writeln!(
        out,
        "<p class=\"span\">From {} to {} ({}).</p>",
        Timestamp(first).rfc3339().as_str(),
        Timestamp(last).rfc3339().as_str(),
        esc(&duration(span_ns))
    )?;
    legend(out)?;
    let drawn = lanes.len().min(MAX_LANES);
    if lanes.len() > drawn {
        writeln!(
            out,
            "<p class=\"warn\">Showing the first {drawn} of {} keys: {} left out (the counts \
             above include them).</p>",
            lanes.len(),
            lanes.len() - drawn
        )?;
    }

    let mut colours: HashMap<&str, &'static str> = HashMap::new();
    let width = axis.end_x() + FLAPS_W;
    let height = 2.0 * AXIS_H + drawn as f64 * LANE_H;
    write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" \
         viewBox=\"0 0 {width:.0} {height:.0}\">\n<defs><pattern id=\"hatch\" width=\"6\" \
         height=\"6\" patternUnits=\"userSpaceOnUse\" patternTransform=\"rotate(45)\"><rect \
         width=\"6\" height=\"6\" fill=\"#fff\" fill-opacity=\"0.45\"/><line x1=\"1\" y1=\"0\" \
         x2=\"1\" y2=\"6\" stroke=\"#c0392b\" stroke-width=\"2\"/></pattern><clipPath \
         id=\"labels\"><rect x=\"0\" y=\"0\" width=\"{:.1}\" height=\"{height:.0}\"/></clipPath>\
         </defs>\n",
        axis.label_w - 8.0
    )?;
    grid(out, &axis, height)?;
    for (i, (k, lane)) in lanes.iter().take(drawn).enumerate() {
        let y = AXIS_H + i as f64 * LANE_H;
        draw_lane(out, &axis, y, i, k, lane, &mut colours)?;
    }
    out.write_all(b"</svg>\n</body>\n</html>\n")
}

fn head(out: &mut dyn Write, title: &str) -> io::Result<()> {
    let title = esc(title);
    write!(
        out,
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; \
         style-src 'unsafe-inline'\">\n<title>herald timeline: {title}</title>\n<style>\n{STYLE}\
         </style>\n</head>\n<body>\n<h1>herald timeline: <code>{title}</code></h1>\n"
    )
}

const STYLE: &str = "\
body { font: 14px/1.4 system-ui, sans-serif; margin: 16px 20px; color: #222; background: #fff; }
h1 { font-size: 18px; margin: 0 0 6px; }
p { margin: 4px 0; }
.bad { color: #c0392b; }
.warn { color: #8a5a00; font-weight: bold; }
.empty { font-size: 16px; color: #555; margin-top: 24px; }
.legend { display: flex; flex-wrap: wrap; gap: 6px 22px; margin: 8px 0 10px; color: #444; }
.legend span { display: inline-flex; align-items: center; gap: 6px; }
svg text { font-family: ui-monospace, monospace; }
.key { font-size: 12px; fill: #222; }
.st { font-size: 10px; fill: #1d1d1d; pointer-events: none; }
.axis { font-size: 11px; fill: #555; }
.nflaps { font-size: 12px; }
svg .bad { fill: #c0392b; font-weight: bold; }
";

fn legend(out: &mut dyn Write) -> io::Result<()> {
    let swatch = |fill: &str| {
        format!(
            "<svg width=\"26\" height=\"14\"><rect width=\"26\" height=\"14\" fill=\"{fill}\"/>\
             </svg>"
        )
    };
    writeln!(
        out,
        "<div class=\"legend\">\
         <span>{}{} a healthy state (a colour per state)</span>\
         <span>{}{}{} warning, high, critical</span>\
         <span><svg width=\"26\" height=\"18\"><path d=\"M9,0 h8 l-4,5 z\" fill=\"#c0392b\"/>\
         <rect x=\"1\" y=\"5\" width=\"24\" height=\"12\" fill=\"#f28e5b\"/><rect x=\"1\" \
         y=\"5\" width=\"24\" height=\"12\" fill=\"url(#hatch)\" stroke=\"#c0392b\" \
         stroke-width=\"1.5\"/></svg> a flap: a W = 0 state the window never showed</span>\
         <span><svg width=\"26\" height=\"20\"><line x1=\"2\" y1=\"17\" x2=\"20\" y2=\"17\" \
         stroke=\"#222\"/><line x1=\"20\" y1=\"1\" x2=\"20\" y2=\"19\" stroke=\"#222\" \
         stroke-width=\"2\"/></svg> an emitted event at its stable_at, the line back to when \
         its state began</span>\
         <span>Hover over anything for its details.</span></div>",
        swatch(CALM[0]),
        swatch(CALM[1]),
        swatch("#f6c85f"),
        swatch("#f28e5b"),
        swatch("#e15759"),
    )
}

/// The time labels above and below the lanes and their grid lines.
fn grid(out: &mut dyn Write, axis: &Axis, height: f64) -> io::Result<()> {
    const TICKS: usize = 4;
    // As many fractional digits as tell the labels apart, up to the nanosecond.
    let step = axis.total / TICKS as i128;
    let digits = match step {
        s if s >= 10_000_000_000 => 0,
        s if s >= 10_000_000 => 3,
        s if s >= 10_000 => 6,
        _ => 9,
    };
    for i in 0..=TICKS {
        let fraction = i as f64 / TICKS as f64;
        let x = axis.label_w + fraction * PLOT_W;
        let full = axis.at(fraction).rfc3339();
        let full = full.as_str();
        // `…:SS.fffZ`, or `…:SSZ` without the point when no digit is kept.
        let kept = if digits == 0 { 19 } else { 20 + digits };
        let label = format!("{}Z", full.get(..kept).unwrap_or(full));
        writeln!(
            out,
            "<line x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#ddd\"/>\
             <text class=\"axis\" x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{label}</text>\
             <text class=\"axis\" x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{label}</text>",
            AXIS_H - 6.0,
            height - AXIS_H + 6.0,
            AXIS_H - 12.0,
            height - 8.0,
        )?;
    }
    Ok(())
}

fn draw_lane<'a>(
    out: &mut dyn Write,
    axis: &Axis,
    y: f64,
    index: usize,
    key: &str,
    lane: &'a Lane,
    colours: &mut HashMap<&'a str, &'static str>,
) -> io::Result<()> {
    let k = esc(key);
    write!(out, "<g class=\"lane\" data-flaps=\"{}\">", lane.flaps)?;
    if index % 2 == 1 {
        write!(
            out,
            "<rect x=\"0\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{LANE_H}\" fill=\"#f4f5f7\"/>",
            axis.end_x() + FLAPS_W
        )?;
    }
    writeln!(
        out,
        "<text class=\"key\" x=\"6\" y=\"{:.1}\" clip-path=\"url(#labels)\">{k}<title>{k}</title>\
         </text>",
        y + 16.0
    )?;
    for (i, c) in lane.changes.iter().enumerate() {
        let next = lane.changes.get(i + 1);
        let x0 = axis.x(c.at);
        let x1 = next.map_or(axis.end_x(), |n| axis.x(n.at));
        // A change that lasted no time on this axis still shows.
        let w = (x1 - x0).max(1.0);
        let fill = match attention(c.severity) {
            Some(colour) => colour,
            None => {
                let n = colours.len();
                colours.entry(c.state.as_str()).or_insert(CALM[n % CALM.len()])
            }
        };
        let s = esc(&c.state);
        let how_long = match next {
            Some(n) => format!("for {}", duration(n.at.saturating_sub(c.at).0.max(0))),
            None => "to the end of the log".to_string(),
        };
        let flap_note = if c.flap { " — a flap: the window never showed it" } else { "" };
        let (top, bar) = (y + BAR_TOP, y + BAR_TOP + BAR_H / 2.0);
        write!(
            out,
            "<g><title>{s}: from {} {how_long}{flap_note}</title><rect x=\"{x0:.2}\" \
             y=\"{top:.1}\" width=\"{w:.2}\" height=\"{BAR_H}\" fill=\"{fill}\"/>",
            c.at.rfc3339().as_str()
        )?;
        if c.flap {
            write!(
                out,
                "<rect class=\"flap\" x=\"{x0:.2}\" y=\"{top:.1}\" width=\"{w:.2}\" \
                 height=\"{BAR_H}\" fill=\"url(#hatch)\" stroke=\"#c0392b\" \
                 stroke-width=\"1.5\"/><path d=\"M{:.2},{:.1} h8 l-4,5 z\" fill=\"#c0392b\"/>",
                x0 + w / 2.0 - 4.0,
                y,
            )?;
        }
        if w >= c.state.chars().count() as f64 * STATE_CHAR_W + 8.0 {
            write!(
                out,
                "<text class=\"st\" x=\"{:.2}\" y=\"{:.1}\">{s}</text>",
                x0 + 4.0,
                bar + 3.5
            )?;
        }
        out.write_all(b"</g>\n")?;
    }
    for t in &lane.ticks {
        let (x_at, x) = (axis.x(t.at), axis.x(t.stable_at));
        writeln!(
            out,
            "<g><title>{}</title><line x1=\"{x_at:.2}\" y1=\"{:.1}\" x2=\"{x:.2}\" y2=\"{:.1}\" \
             stroke=\"#222\"/><line class=\"tick\" x1=\"{x:.2}\" y1=\"{:.1}\" x2=\"{x:.2}\" \
             y2=\"{:.1}\" stroke=\"#222\" stroke-width=\"2\"/><rect x=\"{:.2}\" y=\"{y:.1}\" \
             width=\"8\" height=\"{LANE_H}\" fill=\"transparent\"/></g>",
            esc(&t.line),
            y + LANE_H - 2.5,
            y + LANE_H - 2.5,
            y + 1.0,
            y + LANE_H - 1.0,
            x - 4.0,
        )?;
    }
    let (class, count) = match lane.flaps {
        0 => ("axis", "0 flaps".to_string()),
        1 => ("nflaps bad", "1 flap".to_string()),
        n => ("nflaps bad", format!("{n} flaps")),
    };
    writeln!(
        out,
        "<text class=\"{class}\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{count}</text></g>",
        axis.end_x() + FLAPS_W - 8.0,
        y + 16.0
    )
}

/// `s` safe as HTML text and as a quoted attribute. Control characters become U+FFFD (a
/// newline or tab a space): HTML has no way to carry them, and parsers drop or mangle them
/// each their own way.
fn esc(s: &str) -> Cow<'_, str> {
    let needs = |c: char| matches!(c, '&' | '<' | '>' | '"' | '\'') || c.is_control();
    if !s.contains(needs) {
        return Cow::Borrowed(s);
    }
    let mut o = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            '\n' | '\t' => o.push(' '),
            c if c.is_control() => o.push('\u{FFFD}'),
            c => o.push(c),
        }
    }
    Cow::Owned(o)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::EventKind;

    const S: i64 = 1_000_000_000;

    fn router(name: &str, kind: EventKind, at: i64, stable_at: i64) -> ClusterEvent {
        let mut e = ClusterEvent::new(kind, "prod", Timestamp(at), Timestamp(stable_at));
        e.router = Some(name.into());
        e
    }

    fn page(title: &str, zero: &[ClusterEvent], emitted: &[ClusterEvent]) -> String {
        let mut out = Vec::new();
        render(&mut out, title, zero, emitted).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// edge-1 flaps offline for 300 ms, then goes offline for good; a 2 s window emits the
    /// online and the final offline only.
    fn flapping() -> (Vec<ClusterEvent>, Vec<ClusterEvent>) {
        let zero = vec![
            router("edge-1", EventKind::RouterOnline, 0, 0),
            router("edge-1", EventKind::RouterOffline, 10 * S, 10 * S),
            router("edge-1", EventKind::RouterOnline, 10 * S + 300_000_000, 10 * S + 300_000_000),
            router("edge-1", EventKind::RouterOffline, 20 * S, 20 * S),
            router("edge-2", EventKind::RouterOnline, S, S),
        ];
        let emitted = vec![
            router("edge-1", EventKind::RouterOnline, 0, 2 * S),
            router("edge-2", EventKind::RouterOnline, S, 3 * S),
            router("edge-1", EventKind::RouterOffline, 20 * S, 22 * S),
        ];
        (zero, emitted)
    }

    #[test]
    fn every_key_has_a_lane_with_its_states_and_ticks() {
        let (zero, emitted) = flapping();
        let html = page("log", &zero, &emitted);
        assert_eq!(html.matches("<g class=\"lane\"").count(), 2, "{html}");
        for k in ["prod router edge-1", "prod router edge-2"] {
            assert!(html.contains(&format!(">{k}<title>")), "{k}");
        }
        assert!(html.contains("<b>2</b> keys"), "{html}");
        assert_eq!(html.matches("class=\"tick\"").count(), 3);
        // The emitted line is each tick's tooltip.
        assert!(html.contains(&format!("<title>{}</title>", esc(&text(&emitted[2], false)))));
        assert!(html.contains("online: from 1970-01-01T00:00:00.000000000Z for 10s"), "{html}");
        assert!(html.contains("offline: from 1970-01-01T00:00:20.000000000Z to the end"));
        assert!(html.contains(">1970-01-01T00:00:00.000Z<"), "the axis starts at the first");
        // Self-contained: nothing to fetch, nothing to run.
        assert!(!html.contains("<script") && !html.contains("src=") && !html.contains("href="));
    }

    /// The 300 ms excursion was never emitted: a flap on edge-1's lane, none on edge-2's.
    /// Its return to online is no flap (the window never left online), nor is the final
    /// offline, which the window emitted.
    #[test]
    fn a_swallowed_flap_is_marked_and_counted() {
        let (zero, emitted) = flapping();
        let html = page("log", &zero, &emitted);
        assert_eq!(html.matches("class=\"flap\"").count(), 1, "{html}");
        assert!(html.contains("data-flaps=\"1\"") && html.contains("data-flaps=\"0\""));
        assert!(html.contains(">1 flap<") && html.contains(">0 flaps<"), "{html}");
        assert!(html.contains("<b class=\"bad\">1</b> flaps"), "{html}");
        assert!(html.contains("offline: from 1970-01-01T00:00:10.000000000Z for 300ms — a flap"));
        assert!(!html.contains("00:00:10.300000000Z for 9.700s — a flap"), "{html}");
        assert!(!html.contains("to the end of the log — a flap"));
        // At W = 0 itself nothing is swallowed.
        let same = page("log", &zero, &zero);
        assert_eq!(same.matches("class=\"flap\"").count(), 0);
    }

    /// A state the window reached through another is judged against what it was showing.
    #[test]
    fn a_flap_is_judged_against_the_state_the_window_was_showing() {
        let w = |at, s: &str| (Timestamp(at), s.to_string());
        let window = [w(0, "ctrl1"), w(5 * S, "ctrl2")];
        assert!(!swallowed(&window, Timestamp(0), "ctrl1"), "emitted as it came");
        assert!(swallowed(&window, Timestamp(4 * S), "none"), "never shown");
        assert!(!swallowed(&window, Timestamp(4 * S + 1), "ctrl1"), "the window held it");
        assert!(!swallowed(&window, Timestamp(5 * S), "ctrl2"));
        assert!(swallowed(&[], Timestamp(0), "offline"), "before the window showed anything");
    }

    #[test]
    fn input_strings_are_escaped() {
        let name = "<script>alert('x')</script>&\"";
        let zero = vec![router(name, EventKind::RouterOnline, 0, 0)];
        let html = page("<b>log</b> & co", &zero, &zero);
        assert!(!html.contains("<script>") && !html.contains("<b>log"), "{html}");
        assert!(html.contains("&lt;b&gt;log&lt;/b&gt; &amp; co"));
        assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"));
        assert_eq!(esc("a\u{0}b\nc"), "a\u{FFFD}b c");
        assert!(matches!(esc("plain ctrl1 → ctrl2"), Cow::Borrowed(_)));
    }

    #[test]
    fn empty_input_says_there_is_nothing() {
        let html = page("empty.jsonl", &[], &[]);
        assert!(html.contains("Nothing to show"), "{html}");
        assert!(!html.contains("<svg xmlns"));
        assert!(html.trim_end().ends_with("</html>"));
    }

    /// Every event at one instant: an axis of a second, a visible bar, no NaN.
    #[test]
    fn a_zero_length_span_divides_by_nothing() {
        let zero = vec![router("r", EventKind::RouterOnline, 5 * S, 5 * S)];
        let html = page("one", &zero, &zero);
        assert!(!html.contains("NaN") && !html.contains("inf\""), "{html}");
        assert!(html.contains("width=\"900.00\""), "the one state fills the plot: {html}");
        // Extremes of time do not overflow.
        let zero = vec![
            router("r", EventKind::RouterOnline, i64::MIN, i64::MIN),
            router("r", EventKind::RouterOffline, i64::MAX, i64::MAX),
        ];
        let html = page("wide", &zero, &[]);
        assert!(!html.contains("NaN"), "{html}");
    }

    #[test]
    fn lanes_past_the_cap_are_counted_not_drawn() {
        let zero: Vec<ClusterEvent> = (0..MAX_LANES + 3)
            .map(|i| router(&format!("r{i:05}"), EventKind::RouterOnline, 0, 0))
            .collect();
        let html = page("many", &zero, &[]);
        assert_eq!(html.matches("<g class=\"lane\"").count(), MAX_LANES);
        assert!(html.contains(&format!(
            "Showing the first {MAX_LANES} of {} keys: 3 left out",
            MAX_LANES + 3
        )));
    }
}
