//! `--plot FILE.svg`: one row per series on a logarithmic time axis; a box from the first to the
//! third quartile with the median, whiskers to min and max, and every run as a dot (time to the
//! first line), plus the median time to exit as a hollow diamond.

use std::fmt::Write as _;

use super::report::{Report, Series};

const W: f64 = 860.0;
const LEFT: f64 = 90.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 40.0;
const ROW: f64 = 56.0;
const COLORS: [&str; 5] = ["#4e79a7", "#e15759", "#59a14f", "#f28e2b", "#76b7b2"];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

pub fn svg(r: &Report) -> String {
    let rows: Vec<&Series> = r.series.iter().chain([&r.spawn]).collect();
    let all = rows
        .iter()
        .flat_map(|s| s.first_line_ms.iter().chain(&s.exit_ms))
        .copied()
        .filter(|x| *x > 0.0);
    let (lo, hi) = all.fold((f64::INFINITY, 0.0f64), |(a, b), x| (a.min(x), b.max(x)));
    let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.1, 1.0) };
    let (l0, l1) = (
        lo.log10().floor(),
        hi.log10().ceil().max(lo.log10().floor() + 1.0),
    );
    let x = |v: f64| LEFT + (v.max(1e-6).log10() - l0) / (l1 - l0) * (W - LEFT - RIGHT);
    let h = TOP + ROW * rows.len() as f64 + 40.0;
    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" viewBox="0 0 {W} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(o, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        o,
        r#"<text x="{LEFT}" y="20" font-size="14">thaw bench: {} — time to the first line (dots, box) and median to exit (◇), {} runs, log scale</text>"#,
        esc(&r.image),
        r.runs
    );
    // Grid: 1, 2, 5 × 10^k.
    let bottom = TOP + ROW * rows.len() as f64;
    let mut k = l0.floor();
    while k < l1 {
        for m in [1.0, 2.0, 5.0] {
            let v = m * 10f64.powf(k);
            if v.log10() < l0 || v.log10() > l1 {
                continue;
            }
            let xv = x(v);
            let label = if v >= 1.0 {
                format!("{v:.0} ms")
            } else {
                format!("{v:.p$} ms", p = (-k) as usize)
            };
            let _ = writeln!(
                o,
                r##"<line x1="{xv:.1}" y1="{TOP}" x2="{xv:.1}" y2="{bottom}" stroke="#ddd"/><text x="{xv:.1}" y="{:.1}" text-anchor="middle" fill="#555">{label}</text>"##,
                bottom + 16.0
            );
        }
        k += 1.0;
    }
    for (i, s) in rows.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let cy = TOP + ROW * i as f64 + ROW / 2.0;
        let f = &s.first_line;
        let _ = writeln!(
            o,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            LEFT - 10.0,
            cy + 4.0,
            esc(&s.name)
        );
        let _ = writeln!(
            o,
            r#"<line x1="{:.1}" y1="{cy:.1}" x2="{:.1}" y2="{cy:.1}" stroke="{color}"/>"#,
            x(f.min_ms),
            x(f.max_ms)
        );
        let _ = writeln!(
            o,
            r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="20" fill="{color}" fill-opacity="0.25" stroke="{color}"/>"#,
            x(f.q1_ms),
            cy - 10.0,
            (x(f.q3_ms) - x(f.q1_ms)).max(1.0)
        );
        let _ = writeln!(
            o,
            r#"<line x1="{m:.1}" y1="{:.1}" x2="{m:.1}" y2="{:.1}" stroke="{color}" stroke-width="3"/>"#,
            cy - 12.0,
            cy + 12.0,
            m = x(f.median_ms)
        );
        for (j, v) in s.first_line_ms.iter().enumerate() {
            // Deterministic jitter so that equal times stay visible.
            let dy = ((j * 7) % 11) as f64 - 5.0;
            let stroke = if s.outliers.contains(&j) {
                r#" stroke="black""#
            } else {
                ""
            };
            let _ = writeln!(
                o,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"{stroke}><title>run {}: {v:.3} ms</title></circle>"#,
                x(*v),
                cy + dy,
                j + 1
            );
        }
        let e = x(s.exit.median_ms);
        let _ = writeln!(
            o,
            r#"<path d="M {e:.1} {:.1} l 6 6 l -6 6 l -6 -6 z" fill="none" stroke="{color}"><title>median to exit: {:.3} ms</title></path>"#,
            cy - 6.0,
            s.exit.median_ms
        );
        if let Some(sp) = &s.speedup {
            let _ = writeln!(
                o,
                r##"<text x="{:.1}" y="{:.1}" fill="#333">{:.1}× [{:.1}–{:.1}]</text>"##,
                x(f.max_ms) + 10.0,
                cy + 4.0,
                sp.estimate,
                sp.ci_low,
                sp.ci_high
            );
        }
    }
    o.push_str("</svg>\n");
    o
}
