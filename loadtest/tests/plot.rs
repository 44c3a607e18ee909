//! The `--plot` page as a person sees it: a real run's report rendered by
//! headless Chromium. The page has its summary table and every chart, and
//! the screenshot shows each chart's lines in their colours (the page is
//! drawn, not just written).

#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn chromium() -> &'static str {
    for c in ["chromium", "chromium-browser", "google-chrome"] {
        if Command::new(c)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            return c;
        }
    }
    panic!("headless Chromium is needed to look at the page (apt-get install chromium)");
}

/// Pixels of `png` within 40 of `rgb` on every channel.
fn pixels_of(png: &Path, rgb: (u8, u8, u8)) -> usize {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(png).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let step = info.color_type.samples();
    buf[..info.buffer_size()]
        .chunks(step)
        .filter(|p| {
            p.len() >= 3
                && p[0].abs_diff(rgb.0) < 40
                && p[1].abs_diff(rgb.1) < 40
                && p[2].abs_diff(rgb.2) < 40
        })
        .count()
}

#[test]
fn the_plot_page_renders_its_table_and_charts() {
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("plot-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let page = dir.join("report.html");
    let port = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    };
    let status = Command::new(env!("CARGO_BIN_EXE_rvoip-loadtest"))
        .args(["both", "--listen", &format!("127.0.0.1:{port}")])
        .args([
            "--rate", "20", "--calls", "80", "--hold", "2s", "--media", "--quiet",
        ])
        .arg("--plot")
        .arg(&page)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(
        html.contains("<table id=\"summary\">") && html.contains("calls completed</th><td>80<"),
        "{html}"
    );
    for title in [
        "Calls per second",
        "Calls in progress",
        "Call setup time",
        "RTP packets received per second",
        "RTP loss per second",
        "RTP transit",
    ] {
        assert!(html.contains(&format!("<h2>{title}")), "no chart {title:?}");
    }
    assert_eq!(html.matches("<svg class=\"chart\"").count(), 6);
    assert!(
        html.contains(">time (s)</text>")
            && html.contains(">calls/s</text>")
            && html.contains(">ms</text>")
    );
    // Every line has a point per second it has a value for: the run lasts
    // about 6 s, calls are answered during its first 4.
    for line in html.lines().filter(|l| l.starts_with("<polyline")) {
        let points = line.split("points=\"").nth(1).unwrap_or_default();
        assert!(points.split(' ').count() >= 3, "{line}");
    }

    let shot = dir.join("report.png");
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1000,2600",
        ])
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", page.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        shot.exists(),
        "no screenshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Each series colour is drawn: a 2-pixel line over seconds of the run
    // is hundreds of pixels; the legend swatch alone is 144.
    for (name, rgb) in [
        ("attempted", (0x1f, 0x77, 0xb4)),
        ("completed", (0x2c, 0xa0, 0x2c)),
        ("in progress", (0x94, 0x67, 0xbd)),
        ("transit p99", (0xff, 0x7f, 0x0e)),
    ] {
        let n = pixels_of(&shot, rgb);
        assert!(
            n > 400,
            "{name}: {n} pixels of its colour in {}",
            shot.display()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
