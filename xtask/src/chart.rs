//! SVG charts of the bench: a bar chart of a report (for each scenario, ours relative to its
//! baseline, the ratio, with the target marked; the rows are the JSON objects that `sync-bench`
//! prints, one per scenario), and line charts of the scaling series (`--scaling`: ops/s against
//! the load, ours and the baseline, one panel per series).

use serde_json::Value;

/// One row's fields that the chart uses.
#[derive(Debug, PartialEq)]
pub(crate) struct Bar {
    pub(crate) scenario: String,
    pub(crate) ratio: f64,
    pub(crate) target: String,
    pub(crate) met: bool,
    /// The status says the spread of the rounds crosses the target.
    pub(crate) within_noise: bool,
    /// The smallest and largest ratio of the rounds, when the row has them.
    pub(crate) spread: Option<(f64, f64)>,
}

/// The bars of the report's rows (objects with `scenario`, `ratio`, `target`, `met`, and
/// optionally `status` and `spread`); rows without the first four are left out.
pub(crate) fn bars(rows: &[Value]) -> Vec<Bar> {
    rows.iter()
        .filter_map(|row| {
            Some(Bar {
                scenario: row["scenario"].as_str()?.to_owned(),
                ratio: row["ratio"].as_f64()?,
                target: row["target"].as_str()?.to_owned(),
                met: row["met"].as_bool()?,
                within_noise: row["status"].as_str() == Some("within noise"),
                spread: row["spread"][0].as_f64().zip(row["spread"][1].as_f64()),
            })
        })
        .collect()
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Renders the bars: a log-scale axis from 0.1× to 20×, a line at 1× (parity with the
/// baseline), and each target as a tick.
pub(crate) fn svg(bars: &[Bar], title: &str) -> String {
    let (label_w, plot_w, row_h, top) = (430.0, 420.0, 26.0, 50.0);
    let height = top + row_h * bars.len() as f64 + 40.0;
    let width = label_w + plot_w + 80.0;
    let x = |ratio: f64| {
        let r = ratio.clamp(0.1, 20.0);
        label_w + (r.log10() + 1.0) / (20f64.log10() + 1.0) * plot_w
    };
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"10\" y=\"22\" font-size=\"15\">{}</text>\n<text x=\"10\" y=\"40\" fill=\"#555\">ours ÷ baseline, measured in the same run (log scale); green: target met, amber: within noise (the rounds' spread, the whisker, crosses the target), red: missed; | target</text>\n",
        esc(title)
    );
    for tick in [0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0] {
        let tx = x(tick);
        out += &format!(
            "<line x1=\"{tx:.1}\" y1=\"{top}\" x2=\"{tx:.1}\" y2=\"{:.1}\" stroke=\"{}\" stroke-width=\"{}\"/>\n<text x=\"{tx:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#555\">{tick}×</text>\n",
            height - 30.0,
            if tick == 1.0 { "#000" } else { "#ddd" },
            if tick == 1.0 { 1.5 } else { 1.0 },
            height - 15.0
        );
    }
    for (i, b) in bars.iter().enumerate() {
        let y = top + row_h * i as f64 + 4.0;
        let (x0, x1) = (x(1.0), x(b.ratio));
        let (left, w) = if x1 >= x0 {
            (x0, x1 - x0)
        } else {
            (x1, x0 - x1)
        };
        let colour = match (b.met, b.within_noise) {
            (true, _) => "#3a9d5d",
            (false, true) => "#e0a030",
            (false, false) => "#d9534f",
        };
        out += &format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n<rect x=\"{left:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{colour}\"/>\n<text x=\"{:.1}\" y=\"{:.1}\">{:.2}× ({})</text>\n",
            label_w - 8.0,
            y + 14.0,
            esc(&b.scenario),
            w.max(1.0),
            row_h - 8.0,
            x(b.ratio).max(x0) + 6.0,
            y + 14.0,
            b.ratio,
            esc(&b.target)
        );
        if let Some((lo, hi)) = b.spread {
            // The rounds' spread, as a whisker through the bar.
            out += &format!(
                "<line x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#333\" stroke-width=\"1\"/>\n",
                x(lo),
                y + (row_h - 8.0) / 2.0,
                x(hi),
                y + (row_h - 8.0) / 2.0
            );
        }
        if let Ok(t) = b
            .target
            .trim_start_matches(['<', '>', '=', ' '])
            .trim_end_matches('x')
            .parse::<f64>()
        {
            let tx = x(t);
            out += &format!(
                "<line x1=\"{tx:.1}\" y1=\"{:.1}\" x2=\"{tx:.1}\" y2=\"{:.1}\" stroke=\"#000\" stroke-width=\"2\"/>\n",
                y - 2.0,
                y + row_h - 6.0
            );
        }
    }
    out + "</svg>\n"
}

/// One point of a scaling series: a row of `sync-bench --scaling`.
#[derive(Debug, PartialEq)]
pub(crate) struct Point {
    pub(crate) series: String,
    /// The load: clients, or worker processes for a `task.` series.
    pub(crate) clients: f64,
    /// Our operations per second.
    pub(crate) ours: f64,
    /// The baseline's operations per second.
    pub(crate) base: f64,
    /// What the baseline is (empty when the row does not say).
    pub(crate) baseline: String,
}

/// The scaling points of `rows` (objects with `series`, `clients`, `ours_ops` and `base_ops`,
/// all finite, `clients` at least 1); other rows, report rows among them, are left out.
pub(crate) fn points(rows: &[Value]) -> Vec<Point> {
    rows.iter()
        .filter_map(|row| {
            let p = Point {
                series: row["series"].as_str()?.to_owned(),
                clients: row["clients"].as_f64()?,
                ours: row["ours_ops"].as_f64()?,
                base: row["base_ops"].as_f64()?,
                baseline: row["baseline"].as_str().unwrap_or("").to_owned(),
            };
            let finite = p.ours.is_finite() && p.base.is_finite() && p.clients.is_finite();
            (finite && p.clients >= 1.0).then_some(p)
        })
        .collect()
}

/// A round figure at or above `v` (1, 2 or 5 × a power of ten) for the top of an axis.
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|&c| c >= v)
        .unwrap_or(10.0 * p)
}

/// Renders the points as line charts, one panel per series (in the order the series first
/// appear): ops/s (linear, from 0) against the load (log 2 scale), ours a solid blue line, the
/// baseline a dashed grey one, each point a dot.
pub(crate) fn scaling_svg(points: &[Point], title: &str) -> String {
    let mut series: Vec<&str> = Vec::new();
    for p in points {
        if !series.contains(&p.series.as_str()) {
            series.push(&p.series);
        }
    }
    let (panel_w, panel_h, margin_l, margin_t, gap) = (330.0, 240.0, 60.0, 70.0, 40.0);
    let width = margin_l + (panel_w + gap + margin_l) * series.len().max(1) as f64;
    let height = margin_t + panel_h + 60.0;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"10\" y=\"22\" font-size=\"15\">{}</text>\n<text x=\"10\" y=\"40\" fill=\"#555\">operations per second, all clients together, against the load (log 2 scale); <tspan fill=\"#1f77b4\">━ ours</tspan>, <tspan fill=\"#888\">╌ baseline</tspan></text>\n",
        esc(title)
    );
    for (k, name) in series.iter().enumerate() {
        let mut pts: Vec<&Point> = points.iter().filter(|p| p.series == *name).collect();
        pts.sort_by(|a, b| a.clients.total_cmp(&b.clients));
        let left = margin_l + (panel_w + gap + margin_l) * k as f64;
        let bottom = margin_t + panel_h;
        let (lo, hi) = (pts[0].clients.log2(), pts[pts.len() - 1].clients.log2());
        let x = |c: f64| {
            if hi > lo {
                left + (c.log2() - lo) / (hi - lo) * panel_w
            } else {
                left + panel_w / 2.0
            }
        };
        let top_value = nice_ceiling(pts.iter().map(|p| p.ours.max(p.base)).fold(0.0, f64::max));
        let y = |v: f64| bottom - v.clamp(0.0, top_value) / top_value * panel_h;
        let load = if name.starts_with("task.") {
            "worker processes"
        } else {
            "clients"
        };
        let baseline = pts
            .iter()
            .map(|p| p.baseline.as_str())
            .find(|b| !b.is_empty());
        out += &format!(
            "<text x=\"{left:.1}\" y=\"{:.1}\" font-size=\"13\">{}</text>\n",
            margin_t - 12.0,
            esc(&match baseline {
                Some(b) => format!("{name} (baseline: {b})"),
                None => (*name).to_owned(),
            })
        );
        for i in 0..=4 {
            let v = top_value * f64::from(i) / 4.0;
            out += &format!(
                "<line x1=\"{left:.1}\" y1=\"{yv:.1}\" x2=\"{:.1}\" y2=\"{yv:.1}\" stroke=\"{}\"/>\n<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#555\">{v}</text>\n",
                left + panel_w,
                if i == 0 { "#000" } else { "#ddd" },
                left - 6.0,
                y(v) + 4.0,
                yv = y(v)
            );
        }
        for p in &pts {
            out += &format!(
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#555\">{}</text>\n",
                x(p.clients),
                bottom + 16.0,
                p.clients
            );
        }
        out += &format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{load}</text>\n",
            left + panel_w / 2.0,
            bottom + 34.0
        );
        for (colour, dash, value) in [
            ("#1f77b4", "", (|p: &Point| p.ours) as fn(&Point) -> f64),
            ("#888", " stroke-dasharray=\"6 4\"", |p: &Point| p.base),
        ] {
            let line: Vec<String> = pts
                .iter()
                .map(|p| format!("{:.1},{:.1}", x(p.clients), y(value(p))))
                .collect();
            out += &format!(
                "<polyline points=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"{dash}/>\n",
                line.join(" ")
            );
            for p in &pts {
                out += &format!(
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{colour}\"/>\n",
                    x(p.clients),
                    y(value(p))
                );
            }
        }
    }
    out + "</svg>\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rows_and_draws_each() {
        let rows = vec![
            serde_json::json!({"scenario": "a b", "ours": 2.0, "baseline": 1.0, "unit": "ms",
                "ratio": 2.0, "target": "<= 1x", "met": false}),
            serde_json::json!({"scenario": "c", "ours": 1, "baseline": 2, "unit": "ops/s",
                "ratio": 0.5, "target": ">= 0.8x", "met": false, "status": "within noise",
                "spread": [0.4, 0.9]}),
            serde_json::json!({"scenario": "no ratio"}),
        ];
        let bars = bars(&rows);
        assert_eq!(bars.len(), 2);
        assert_eq!(
            bars[0],
            Bar {
                scenario: "a b".into(),
                ratio: 2.0,
                target: "<= 1x".into(),
                met: false,
                within_noise: false,
                spread: None,
            }
        );
        assert!(bars[1].within_noise);
        assert_eq!(bars[1].spread, Some((0.4, 0.9)));
        let svg = svg(&bars, "t");
        assert_eq!(svg.matches("<rect x=").count(), 2);
        assert!(svg.contains("2.00×") && svg.contains("0.50×"));
        assert!(svg.contains("#e0a030") && svg.contains("#d9534f"));
    }

    fn point(series: &str, clients: f64, ours: f64, base: f64) -> serde_json::Value {
        serde_json::json!({"series": series, "clients": clients, "ours_ops": ours,
            "base_ops": base, "ours_p99_ms": 12.5, "base_p99_ms": null, "baseline": "b"})
    }

    /// The numbers of every `name="…"` attribute in `svg`.
    fn attrs(svg: &str, name: &str) -> Vec<f64> {
        svg.split(&format!(" {name}=\""))
            .skip(1)
            .filter_map(|rest| rest.split('"').next()?.parse().ok())
            .collect()
    }

    #[test]
    fn reads_scaling_points_and_leaves_other_rows_out() {
        let rows = vec![
            point("lock.one_name", 8.0, 300.0, 100.0),
            // A report row, a point without the baseline's figure, a NaN (null) figure.
            serde_json::json!({"scenario": "a", "ratio": 1.0, "target": "<= 1x", "met": true}),
            serde_json::json!({"series": "lock.one_name", "clients": 4, "ours_ops": 1.0}),
            serde_json::json!({"series": "x", "clients": 4, "ours_ops": null, "base_ops": 1.0}),
            serde_json::json!({"series": "x", "clients": 0, "ours_ops": 1.0, "base_ops": 1.0}),
        ];
        let p = points(&rows);
        assert_eq!(
            p,
            vec![Point {
                series: "lock.one_name".into(),
                clients: 8.0,
                ours: 300.0,
                base: 100.0,
                baseline: "b".into()
            }]
        );
        // Report rows are not scaling points, nor scaling points bars.
        assert!(bars(&[point("s", 1.0, 1.0, 1.0)]).is_empty());
    }

    #[test]
    fn draws_a_line_per_side_and_series_inside_its_panel() {
        let mut rows = Vec::new();
        for c in [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0] {
            // Ours grows with the load, the baseline stays flat.
            rows.push(point("lock.one_name", c, 100.0 * c, 100.0));
            rows.push(point("lock.distinct_names", c, 50.0, 50.0));
        }
        for w in [3.0, 1.0, 2.0] {
            rows.push(point("task.workers", w, 200.0 * w, 700.0));
        }
        let pts = points(&rows);
        let svg = scaling_svg(&pts, "scaling & <growth>");
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(svg.contains("scaling &amp; &lt;growth&gt;"));
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
        // Two lines (ours, baseline) per series, a dot per side and point.
        assert_eq!(svg.matches("<polyline").count(), 6);
        assert_eq!(svg.matches("<circle").count(), 2 * pts.len());
        assert!(svg.contains("task.workers (baseline: b)") && svg.contains("worker processes"));
        let (cx, cy) = (attrs(&svg, "cx"), attrs(&svg, "cy"));
        let (w, h) = (attrs(&svg, "width")[0], attrs(&svg, "height")[0]);
        assert!(cx.iter().all(|&x| (0.0..=w).contains(&x)));
        assert!(cy.iter().all(|&y| (50.0..=h).contains(&y)));
        // The first series' ours: 7 dots left to right, rising (smaller y) with the load.
        let ours_cx = &cx[..7];
        let ours_cy = &cy[..7];
        assert!(ours_cx.windows(2).all(|p| p[0] < p[1]));
        assert!(ours_cy.windows(2).all(|p| p[0] > p[1]));
        // The baseline of the first series is flat; the task series is sorted by load.
        assert!(cy[7..14].windows(2).all(|p| p[0] == p[1]));
        let task_cx = &cx[28..31];
        assert!(task_cx.windows(2).all(|p| p[0] < p[1]));
        // Each series has its own panel: the task series is right of the lock series.
        assert!(task_cx[0] > cx[13]);
    }

    #[test]
    fn a_single_point_or_zero_figures_draw_without_nan() {
        let svg = scaling_svg(&points(&[point("lock.one_name", 1.0, 0.0, 0.0)]), "t");
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
        assert_eq!(svg.matches("<circle").count(), 2);
        assert_eq!(nice_ceiling(6400.0), 10000.0);
        assert_eq!(nice_ceiling(1500.0), 2000.0);
        assert_eq!(nice_ceiling(100.0), 100.0);
        assert_eq!(nice_ceiling(0.0), 1.0);
    }
}
