//! The report's charts as inline SVG: a horizontal grouped bar chart and a
//! time-series line. Every piece of data goes through [`esc`].

use hwsched_store::report::Point;

use crate::report::{
    dates::fmt_time,
    text::{clip, esc, finite, fmt_num},
};

/// The smallest 1, 2 or 5 x 10^k at or above `x` (and above zero).
pub(crate) fn nice_ceil(x: f64) -> f64 {
    if !x.is_finite() || x <= 0.0 {
        return 1.0;
    }
    let p = 10f64.powf(x.log10().floor());
    [1.0, 2.0, 5.0, 10.0].into_iter().map(|m| m * p).find(|v| *v >= x * 0.999_999).unwrap_or(10.0 * p)
}

const COLORS: [&str; 4] = ["#4e79a7", "#f28e2b", "#e15759", "#59a14f"];

/// A horizontal grouped bar chart: one group per label, one bar per series.
/// `unit` follows the values ("%", "s"); `min_max` is the least axis maximum.
pub(crate) fn bar_chart(
    title: &str,
    series: &[&str],
    groups: &[(String, Vec<f64>)],
    unit: &str,
    min_max: f64,
) -> String {
    let (w, label_w, value_w, bar_h, gap, top) = (760.0, 230.0, 70.0, 12.0, 10.0, 46.0);
    let plot_w = w - label_w - value_w;
    let group_h = bar_h * series.len() as f64 + gap;
    let h = top + group_h * groups.len() as f64 + 24.0;
    let max = groups.iter().flat_map(|(_, v)| v.iter().copied()).filter(|v| v.is_finite()).fold(min_max, f64::max);
    let max = nice_ceil(max);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" width=\"{w}\" height=\"{h:.0}\" \
         viewBox=\"0 0 {w} {h:.0}\" role=\"img\" aria-label=\"{t}\"><title>{t}</title>\
         <text x=\"0\" y=\"16\" class=\"ct\">{t}</text>",
        t = esc(title)
    );
    // legend
    let mut lx = label_w;
    for (i, name) in series.iter().enumerate() {
        s.push_str(&format!(
            "<rect x=\"{lx:.0}\" y=\"24\" width=\"10\" height=\"10\" fill=\"{}\"/>\
             <text x=\"{:.0}\" y=\"33\" class=\"lg\">{}</text>",
            COLORS[i % COLORS.len()],
            lx + 14.0,
            esc(name)
        ));
        lx += 24.0 + 7.0 * name.chars().count() as f64;
    }
    // grid and axis labels
    let bottom = h - 20.0;
    for k in 0..=4 {
        let x = label_w + plot_w * f64::from(k) / 4.0;
        let v = max * f64::from(k) / 4.0;
        s.push_str(&format!(
            "<line x1=\"{x:.1}\" y1=\"{top}\" x2=\"{x:.1}\" y2=\"{bottom:.1}\" class=\"grid\"/>\
             <text x=\"{x:.1}\" y=\"{:.1}\" class=\"ax\" text-anchor=\"middle\">{}{}</text>",
            bottom + 14.0,
            fmt_num(v),
            esc(unit)
        ));
    }
    for (gi, (label, values)) in groups.iter().enumerate() {
        let gy = top + group_h * gi as f64;
        s.push_str(&format!(
            "<text x=\"{:.0}\" y=\"{:.1}\" class=\"lb\" text-anchor=\"end\"><title>{}</title>{}</text>",
            label_w - 8.0,
            gy + (group_h - gap) / 2.0 + 4.0,
            esc(label),
            esc(&clip(label, 34))
        ));
        for (si, v) in values.iter().enumerate() {
            let v = finite(*v).max(0.0);
            let y = gy + bar_h * si as f64;
            let bw = (plot_w * v / max).clamp(0.0, plot_w);
            let name = series.get(si).copied().unwrap_or("");
            s.push_str(&format!(
                "<rect x=\"{label_w}\" y=\"{y:.1}\" width=\"{bw:.1}\" height=\"{:.1}\" fill=\"{}\">\
                 <title>{}</title></rect>\
                 <text x=\"{:.1}\" y=\"{:.1}\" class=\"val\">{}{}</text>",
                bar_h - 2.0,
                COLORS[si % COLORS.len()],
                esc(&format!("{label}: {name} {}{unit}", fmt_num(v))),
                label_w + bw + 4.0,
                y + bar_h - 3.0,
                fmt_num(v),
                esc(unit)
            ));
        }
    }
    s.push_str("</svg>");
    s
}

/// A time series as a line with its area, 0 to max(100, peak).
pub(crate) fn sparkline(title: &str, points: &[Point], unit: &str) -> String {
    let (w, h, left, right, top, bottom) = (760.0, 150.0, 40.0, 10.0, 26.0, 22.0);
    let (pw, ph) = (w - left - right, h - top - bottom);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" width=\"{w}\" height=\"{h}\" \
         viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"{t}\"><title>{t}</title>\
         <text x=\"0\" y=\"16\" class=\"ct\">{t}</text>",
        t = esc(title)
    );
    let max = nice_ceil(points.iter().map(|p| finite(p.value)).fold(100.0, f64::max));
    for k in 0..=2 {
        let y = top + ph * f64::from(k) / 2.0;
        let v = max * f64::from(2 - k) / 2.0;
        s.push_str(&format!(
            "<line x1=\"{left}\" y1=\"{y:.1}\" x2=\"{:.0}\" y2=\"{y:.1}\" class=\"grid\"/>\
             <text x=\"{:.0}\" y=\"{:.1}\" class=\"ax\" text-anchor=\"end\">{}{}</text>",
            w - right,
            left - 4.0,
            y + 4.0,
            fmt_num(v),
            esc(unit)
        ));
    }
    let (t0, t1) = match (points.first(), points.last()) {
        (Some(a), Some(b)) if b.time > a.time => (f64::from(a.time), f64::from(b.time)),
        _ => {
            s.push_str(&format!(
                "<text x=\"{:.0}\" y=\"{:.0}\" class=\"ax\" text-anchor=\"middle\">not enough samples for a line</text></svg>",
                left + pw / 2.0,
                top + ph / 2.0
            ));
            return s;
        }
    };
    let xy = |p: &Point| {
        let x = left + pw * (f64::from(p.time) - t0) / (t1 - t0);
        let y = top + ph * (1.0 - (finite(p.value) / max).clamp(0.0, 1.0));
        (x, y)
    };
    let line: Vec<String> = points.iter().map(xy).map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
    let base = top + ph;
    s.push_str(&format!(
        "<polygon points=\"{left:.1},{base:.1} {} {:.1},{base:.1}\" class=\"area\"/>\
         <polyline points=\"{}\" class=\"line\"/>",
        line.join(" "),
        left + pw,
        line.join(" ")
    ));
    let peak = points.iter().copied().fold(points[0], |a, b| if b.value > a.value { b } else { a });
    let (px, py) = xy(&peak);
    s.push_str(&format!(
        "<circle cx=\"{px:.1}\" cy=\"{py:.1}\" r=\"3\" class=\"peak\"><title>{}</title></circle>",
        esc(&format!("peak {}{unit} at {} UTC", fmt_num(peak.value), fmt_time(peak.time)))
    ));
    for (x, t, anchor) in [(left, t0, "start"), (w - right, t1, "end")] {
        s.push_str(&format!(
            "<text x=\"{x:.0}\" y=\"{:.0}\" class=\"ax\" text-anchor=\"{anchor}\">{}</text>",
            h - 6.0,
            esc(&fmt_time(t as u32))
        ));
    }
    s.push_str("</svg>");
    s
}
