//! The two plots `cargo bench --bench compare` writes for BENCHMARKS.md (SVG, with
//! `plotters`): the W1 round-trip latency distribution beside the raw floor and
//! Python, and `map` throughput against the number of workers beside Python's
//! `Pool.map`.

use plotters::prelude::*;

/// The percentiles the latency plot shows, and their labels.
pub(crate) const PERCENTILES: [(f64, &str); 4] = [
    (0.50, "p50"),
    (0.90, "p90"),
    (0.99, "p99"),
    (0.999, "p99.9"),
];

/// One line of the latency plot: a name and its value at each of [`PERCENTILES`], µs.
pub(crate) struct Latency {
    pub(crate) name: String,
    pub(crate) at: [f64; 4],
}

impl Latency {
    /// The percentiles of `samples` (µs).
    pub(crate) fn of(name: &str, mut samples: Vec<f64>) -> Latency {
        samples.sort_by(f64::total_cmp);
        let at = PERCENTILES.map(|(q, _)| {
            let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
            samples.get(i).copied().unwrap_or(f64::NAN)
        });
        Latency {
            name: name.to_owned(),
            at,
        }
    }
}

const COLOURS: [RGBColor; 5] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0xff, 0x7f, 0x0e),
];

type Result = std::result::Result<(), Box<dyn std::error::Error>>;

/// The latency distribution of each line, on a log scale of µs.
pub(crate) fn latency(path: &std::path::Path, title: &str, lines: &[Latency]) -> Result {
    let root = SVGBackend::new(path, (760, 440)).into_drawing_area();
    root.fill(&WHITE)?;
    let values = lines.iter().flat_map(|l| l.at).filter(|v| v.is_finite());
    let (lo, hi) = values.fold((f64::MAX, 0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(
            -0.3f64..3.3f64,
            ((lo * 0.7).max(0.01)..hi * 1.4).log_scale(),
        )?;
    chart
        .configure_mesh()
        .x_labels(4)
        .x_label_formatter(&|x| {
            let i = x.round();
            match PERCENTILES.get(i as usize) {
                Some((_, label)) if (x - i).abs() < 0.01 => (*label).to_owned(),
                _ => String::new(),
            }
        })
        .y_desc("round trip (µs, log scale)")
        .draw()?;
    for (line, colour) in lines.iter().zip(COLOURS.iter().cycle()) {
        let points: Vec<(f64, f64)> = line
            .at
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_finite())
            .map(|(i, v)| (i as f64, *v))
            .collect();
        draw_line(&mut chart, &line.name, points, colour)?;
    }
    finish(chart)?;
    root.present()?;
    Ok(())
}

/// One named line with a dot at each point, and its legend entry.
fn draw_line<'a, DB: DrawingBackend + 'a, X, Y>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>,
    name: &str,
    points: Vec<(f64, f64)>,
    colour: &'static RGBColor,
) -> Result
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
    DB::ErrorType: 'static,
{
    chart
        .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))?
        .label(name)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
    chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, colour.filled())))?;
    Ok(())
}

/// The legend, top left.
fn finish<'a, DB: DrawingBackend + 'a, X, Y>(
    chart: ChartContext<'a, DB, Cartesian2d<X, Y>>,
) -> Result
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
    DB::ErrorType: 'static,
{
    let mut chart = chart;
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    Ok(())
}

/// Items per second (millions) against workers, one line per name.
pub(crate) fn throughput(
    path: &std::path::Path,
    title: &str,
    lines: &[(String, Vec<(u32, f64)>)],
) -> Result {
    let root = SVGBackend::new(path, (760, 440)).into_drawing_area();
    root.fill(&WHITE)?;
    let top = lines
        .iter()
        .flat_map(|(_, pts)| pts.iter().map(|p| p.1))
        .fold(0f64, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0.5f64..4.5f64, 0f64..top / 1e6 * 1.15)?;
    chart
        .configure_mesh()
        .x_labels(4)
        .x_label_formatter(&|x| {
            let w = x.round();
            if (x - w).abs() < 0.01 && [1.0, 2.0, 4.0].contains(&w) {
                format!("{w}")
            } else {
                String::new()
            }
        })
        .x_desc("workers")
        .y_desc("million items/s")
        .draw()?;
    for ((name, pts), colour) in lines.iter().zip(COLOURS.iter().cycle()) {
        let points: Vec<(f64, f64)> = pts.iter().map(|&(w, r)| (f64::from(w), r / 1e6)).collect();
        draw_line(&mut chart, name, points, colour)?;
    }
    finish(chart)?;
    root.present()?;
    Ok(())
}
