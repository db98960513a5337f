//! An SVG bar chart of a bench report: for each scenario, ours relative to its baseline (the
//! ratio), with the target marked. The report's rows are the JSON objects that `sync-bench`
//! prints, one per scenario.

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
}
