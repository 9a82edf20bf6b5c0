//! `herald replay --timeline`: the page a real browser draws from the shipped sample
//! (DESIGN §12). Headless Chromium (Debian package `chromium`, installed by
//! `scripts/services.sh`) renders it; without it these tests fail, they do not skip.

use std::collections::{BTreeSet, HashMap};
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use herald::sinks::encoding::key;

use crate::support::*;

const SAMPLE: &str = "samples/openziti-ha.jsonl";

/// Far past the second or so a page of the sample takes: a browser stuck longer is killed.
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(60);

fn sample() -> String {
    repo(SAMPLE).to_str().unwrap().to_string()
}

/// Headless Chromium on `args`, with a fresh profile in `dir`, killed after
/// [`CHROMIUM_TIMEOUT`] so the suite never hangs on it.
fn chromium(dir: &Path, profile: &str, args: &[String]) -> Output {
    let mut child = Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"])
        .arg("--disable-background-networking")
        .arg(format!("--user-data-dir={}", dir.join(profile).display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A group of its own: its helper processes hold the pipes, and go with it.
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| {
            panic!("chromium (Debian package chromium; scripts/services.sh installs it): {e}")
        });
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let kill_group = |pid: u32| {
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{pid}")]).status();
    };
    let deadline = Instant::now() + CHROMIUM_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for chromium") {
            break status;
        }
        if Instant::now() > deadline {
            kill_group(child.id());
            let _ = child.wait();
            panic!("chromium {args:?} did not finish within {CHROMIUM_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // A helper left behind would keep the pipes open.
    kill_group(child.id());
    Output { status, stdout: stdout.join().unwrap(), stderr: stderr.join().unwrap() }
}

/// Text as the DOM serializer writes it back.
fn as_dom_text(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('\u{a0}', "&nbsp;")
}

/// The page of the sample in a real browser: a drawing, not a blank screen, and a lane named
/// for every key replay reports on, at the window and at W = 0.
#[test]
fn replay_timeline_draws_a_lane_per_key_in_a_browser() {
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("t.html");
    let page_arg = page.to_str().unwrap().to_string();
    let out = run(&["replay", "--cluster", "prod", "--timeline", &page_arg, &sample()], b"");
    assert!(out.status.success(), "{out:?}");
    // The events and the summary are what they are without the page.
    let plain = run(&["replay", "--cluster", "prod", "--format", "json", &sample()], b"");
    let emitted = events(&plain.stdout);
    assert!(!emitted.is_empty());
    let printed = events(&out.stdout);
    let ids = |es: &[herald::model::ClusterEvent]| -> Vec<String> {
        es.iter().map(|e| e.id.clone()).collect()
    };
    assert_eq!(ids(&printed), ids(&emitted));
    let last = stderr_lines(&out).last().cloned().unwrap_or_default();
    assert!(last.starts_with("records="), "the summary is the last stderr line: {last}");
    assert_eq!(summary(&out)["events"], emitted.len() as u64);

    let zero = run(&["replay", "--cluster", "prod", "--window", "0s", &sample()], b"");
    let zero = events(&zero.stdout);
    let keys: BTreeSet<String> = emitted.iter().chain(&zero).map(key).collect();
    assert!(keys.len() > 5, "{keys:?}");

    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.starts_with("<!doctype html>"), "{}", &html[..200.min(html.len())]);
    assert!(!html.contains("<script") && !html.contains("src="), "self-contained");
    let url = format!("file://{page_arg}");

    // (1) What a screen shows: not one colour, and much of it drawn.
    let png = dir.path().join("t.png");
    let shot = chromium(
        dir.path(),
        "shot",
        &[format!("--screenshot={}", png.display()), "--window-size=1400,1000".into(), url.clone()],
    );
    assert!(
        shot.status.success(),
        "chromium --screenshot: {}",
        String::from_utf8_lossy(&shot.stderr)
    );
    let (width, height, pixels) = decode(&png);
    assert_eq!((width, height), (1400, 1000));
    let mut counts: HashMap<&[u8], usize> = HashMap::new();
    for p in &pixels {
        *counts.entry(p.as_slice()).or_default() += 1;
    }
    let background = counts.values().copied().max().unwrap_or(0);
    let drawn = pixels.len() - background;
    assert!(counts.len() > 10, "{} colours on the screenshot", counts.len());
    assert!(
        drawn * 10 > pixels.len(),
        "{drawn} of {} pixels differ from the background",
        pixels.len()
    );

    // (2) What the page says once a browser parsed it: every key, as a lane's text.
    let dom = chromium(dir.path(), "dom", &["--dump-dom".into(), url]);
    assert!(dom.status.success(), "chromium --dump-dom: {}", String::from_utf8_lossy(&dom.stderr));
    let dom = String::from_utf8(dom.stdout).unwrap();
    for k in &keys {
        assert!(dom.contains(&format!(">{}<", as_dom_text(k))), "no lane names {k:?}");
    }
    assert_eq!(dom.matches("class=\"lane\"").count(), keys.len());
    // The sample's router flap and leader blips are marked, and each lane's count adds up.
    let marked = dom.matches("class=\"flap\"").count();
    assert!(marked > 0, "no flap marked");
    let counted: usize = dom
        .split("data-flaps=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next()?.parse::<usize>().ok())
        .sum();
    assert_eq!(counted, marked);
    assert!(dom.contains(&format!("<b class=\"bad\">{marked}</b> flaps")), "the header's count");
    assert_eq!(dom.matches("class=\"tick\"").count(), emitted.len());
}

/// The page needs the log twice: standard input is refused, not half drawn.
#[test]
fn replay_timeline_refuses_standard_input() {
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("t.html");
    let log = std::fs::read(repo(SAMPLE)).unwrap();
    let out = run(&["replay", "--timeline", page.to_str().unwrap(), "-"], &log);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("give a file"), "{out:?}");
    assert!(!page.exists());
}

/// The screenshot as (width, height, one RGB(A) sample per pixel).
fn decode(path: &Path) -> (u32, u32, Vec<Vec<u8>>) {
    let file = std::io::BufReader::new(std::fs::File::open(path).expect("the screenshot"));
    let mut decoder = png::Decoder::new(file);
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("a sane size")];
    let info = reader.next_frame(&mut buf).expect("a frame");
    let samples = info.color_type.samples();
    let pixels = buf[..info.buffer_size()].chunks(samples).map(<[u8]>::to_vec).collect();
    (info.width, info.height, pixels)
}
