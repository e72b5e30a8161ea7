//! `--plot FILE.svg`: the latency distribution (percentile spectrum) and IOPS over
//! time, drawn with `plotters` (SVG backend only).

use std::path::Path;

use hdrhistogram::Histogram;
use plotters::prelude::*;

use crate::bench::Outcome;
use crate::Error;

/// Highest percentile plotted: 99.999% (five nines).
const MAX_NINES: f64 = 5.0;

/// Points of a percentile spectrum: x = nines (-log10(1 - p)), y = latency in µs.
pub fn spectrum(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    (0..=100)
        .map(|i| {
            let x = MAX_NINES * f64::from(i) / 100.0;
            let q = 1.0 - 10f64.powf(-x);
            (x, h.value_at_quantile(q) as f64 / 1000.0)
        })
        .collect()
}

fn nines_label(x: f64) -> String {
    let p = (1.0 - 10f64.powf(-x)) * 100.0;
    let s = format!("{p:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}%")
}

/// A named line of the latency chart.
type Series<'a> = (&'a str, Vec<(f64, f64)>, RGBColor);

/// Draws both charts into `path`.
pub fn draw(path: &Path, title: &str, o: &Outcome) -> Result<(), Error> {
    draw_inner(path, title, o).map_err(|e| Error::Run(format!("--plot {}: {e}", path.display())))
}

fn draw_inner(
    path: &Path,
    title: &str,
    o: &Outcome,
) -> Result<(), Box<dyn std::error::Error + 'static>> {
    let t = &o.total;
    let mut series: Vec<Series<'_>> = Vec::new();
    if t.read.ios > 0 && t.write.ios > 0 {
        series.push(("all", spectrum(&t.all().hist), BLACK));
    }
    if t.read.ios > 0 {
        series.push(("read", spectrum(&t.read.hist), BLUE));
    }
    if t.write.ios > 0 {
        series.push(("write", spectrum(&t.write.hist), RED));
    }
    let ymax = series
        .iter()
        .flat_map(|(_, v, _)| v.iter().map(|p| p.1))
        .fold(1.0f64, f64::max)
        * 1.05;

    let root = SVGBackend::new(path, (1000, 800)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(400);

    let mut lat = ChartBuilder::on(&top)
        .caption(format!("{title}: latency"), ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..MAX_NINES, 0f64..ymax)?;
    lat.configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (µs)")
        .x_labels(6)
        .x_label_formatter(&|x| nines_label(*x))
        .draw()?;
    for (name, pts, color) in series {
        lat.draw_series(LineSeries::new(pts, color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    lat.configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;

    let pts: Vec<(f64, f64)> = t
        .timeline_iops()
        .into_iter()
        .enumerate()
        .map(|(i, v)| ((i as f64 + 0.5) * t.interval, v))
        .collect();
    let xmax = (pts.len() as f64 * t.interval).max(t.interval);
    let imax = pts.iter().map(|p| p.1).fold(1.0f64, f64::max) * 1.1;
    let mut iops = ChartBuilder::on(&bottom)
        .caption("IOPS over time", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..xmax, 0f64..imax)?;
    iops.configure_mesh()
        .x_desc("seconds after the ramp")
        .y_desc("IOPS")
        .y_label_formatter(&|v| crate::report::thousands(*v))
        .draw()?;
    iops.draw_series(LineSeries::new(pts, BLUE.stroke_width(2)))?;
    root.present()?;
    Ok(())
}
