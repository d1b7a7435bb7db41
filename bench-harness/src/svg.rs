//! Small self-contained SVG line charts for the report (no plotting dependency to build).

use std::fmt::Write as _;

/// One line of a chart.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// A chart's axes and decorations.
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// Tick positions and labels on the x axis; `None` for evenly spaced numbers.
    pub x_ticks: Option<Vec<(f64, String)>>,
    /// Logarithmic y axis (latencies span decades).
    pub log_y: bool,
    /// Horizontal reference lines (a limit, a target), with labels.
    pub hlines: Vec<(f64, String)>,
}

const W: f64 = 760.0;
const H: f64 = 420.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;
const COLORS: &[&str] = &["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn fmt_num(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// Renders the chart as an SVG document.
pub fn render(chart: &Chart, series: &[Series]) -> String {
    let all: Vec<(f64, f64)> = series.iter().flat_map(|s| s.points.iter().copied()).collect();
    let ys = all.iter().map(|p| p.1).chain(chart.hlines.iter().map(|h| h.0));
    let (mut y_min, mut y_max) = ys.fold((f64::MAX, f64::MIN), |(lo, hi), y| (lo.min(y), hi.max(y)));
    let (mut x_min, mut x_max) = all.iter().fold((f64::MAX, f64::MIN), |(lo, hi), p| (lo.min(p.0), hi.max(p.0)));
    if let Some(t) = &chart.x_ticks {
        for (x, _) in t {
            x_min = x_min.min(*x);
            x_max = x_max.max(*x);
        }
    }
    if all.is_empty() {
        (x_min, x_max, y_min, y_max) = (0.0, 1.0, 0.0, 1.0);
    }
    if x_max <= x_min {
        x_max = x_min + 1.0;
    }
    let ty = |v: f64| if chart.log_y { v.max(1e-3).log10() } else { v };
    if chart.log_y {
        y_min = 10f64.powf(ty(y_min).floor());
        y_max = 10f64.powf(ty(y_max).ceil());
        if y_max <= y_min {
            y_max = y_min * 10.0;
        }
    } else {
        y_min = 0.0;
        y_max = if y_max <= 0.0 { 1.0 } else { y_max * 1.1 };
    }
    let px = |x: f64| LEFT + (x - x_min) / (x_max - x_min) * (W - LEFT - RIGHT);
    let py = |y: f64| TOP + (1.0 - (ty(y) - ty(y_min)) / (ty(y_max) - ty(y_min))) * (H - TOP - BOTTOM);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>
"#,
        W / 2.0,
        esc(&chart.title)
    );
    // Axes and grid.
    let _ = writeln!(
        s,
        r##"<line x1="{LEFT}" y1="{}" x2="{}" y2="{}" stroke="#333"/><line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{}" stroke="#333"/>"##,
        H - BOTTOM,
        W - RIGHT,
        H - BOTTOM,
        H - BOTTOM
    );
    let y_ticks: Vec<f64> = if chart.log_y {
        let (a, b) = (ty(y_min).round() as i32, ty(y_max).round() as i32);
        (a..=b).map(|e| 10f64.powi(e)).collect()
    } else {
        (0..=5).map(|i| y_min + (y_max - y_min) * i as f64 / 5.0).collect()
    };
    for y in y_ticks {
        let p = py(y);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{p:.1}" x2="{}" y2="{p:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            W - RIGHT,
            LEFT - 6.0,
            p + 4.0,
            fmt_num(y)
        );
    }
    let x_ticks: Vec<(f64, String)> = chart.x_ticks.clone().unwrap_or_else(|| {
        (0..=6)
            .map(|i| x_min + (x_max - x_min) * i as f64 / 6.0)
            .map(|x| (x, fmt_num(x)))
            .collect()
    });
    for (x, label) in &x_ticks {
        let p = px(*x);
        let _ = writeln!(
            s,
            r##"<line x1="{p:.1}" y1="{TOP}" x2="{p:.1}" y2="{}" stroke="#eee"/><text x="{p:.1}" y="{}" text-anchor="middle">{}</text>"##,
            H - BOTTOM,
            H - BOTTOM + 16.0,
            esc(label)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text><text transform="translate(18,{}) rotate(-90)" text-anchor="middle">{}</text>"#,
        (LEFT + W - RIGHT) / 2.0,
        H - 18.0,
        esc(&chart.x_label),
        (TOP + H - BOTTOM) / 2.0,
        esc(&chart.y_label)
    );
    for (v, label) in &chart.hlines {
        let p = py(*v);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{p:.1}" x2="{}" y2="{p:.1}" stroke="#555" stroke-dasharray="6,4"/><text x="{}" y="{:.1}" text-anchor="end" fill="#555">{}</text>"##,
            W - RIGHT,
            W - RIGHT - 4.0,
            p - 4.0,
            esc(label)
        );
    }
    for (i, ser) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let path: Vec<String> = ser.points.iter().map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y))).collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            path.join(" ")
        );
        let ly = TOP + 14.0 + 16.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="3"/><text x="{}" y="{}">{}</text>"#,
            LEFT + 12.0,
            LEFT + 32.0,
            LEFT + 38.0,
            ly + 4.0,
            esc(&ser.name)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// The x position of a quantile on a "nines" axis: p50 at 0.3, p90 at 1, p99 at 2, ...
pub fn nines(q: f64) -> f64 {
    -(1.0 - q.min(0.999_999)).log10()
}

/// Ticks for a nines axis up to p99.999, and "max" one step beyond.
pub fn nines_ticks() -> Vec<(f64, String)> {
    vec![
        (0.0, "p0".into()),
        (nines(0.5), "p50".into()),
        (1.0, "p90".into()),
        (2.0, "p99".into()),
        (3.0, "p99.9".into()),
        (4.0, "p99.99".into()),
        (5.0, "p99.999".into()),
        (6.0, "max".into()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_is_one_svg_document_with_every_series() {
        let chart = Chart {
            title: "t <1>".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            x_ticks: Some(nines_ticks()),
            log_y: true,
            hlines: vec![(5.0, "target".into())],
        };
        let svg = render(
            &chart,
            &[
                Series {
                    name: "a".into(),
                    points: vec![(0.0, 0.5), (2.0, 3.0), (6.0, 40.0)],
                },
                Series {
                    name: "b".into(),
                    points: vec![],
                },
            ],
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("t &lt;1&gt;"), "titles are escaped");
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
        let empty = render(&chart, &[]);
        assert!(!empty.contains("NaN"));
    }

    #[test]
    fn nines_put_percentiles_on_a_log_scale() {
        assert!((nines(0.99) - 2.0).abs() < 1e-9);
        assert!((nines(0.999) - 3.0).abs() < 1e-9);
        assert!(nines(1.0).is_finite());
    }
}
