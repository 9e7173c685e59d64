//! `anteroom bench plot`: draws, from the JSON lines the fan-out sweeps
//! print, deliveries per second and p99 latency against the offered rate,
//! one chart pair per room size, publisher count and CPU mode (unpinned, or
//! `--pin`), one line per broker, and one per transport other than TCP
//! (`anteroom (tls)`, `anteroom (quic)`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

/// Plot settings.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// JSON lines written by the bench (e.g. by scripts/bench-all.sh).
    #[arg(long, default_value = "bench-results.jsonl")]
    pub input: PathBuf,
    /// Directory for the SVG files.
    #[arg(long, default_value = "benchmarks")]
    pub output: PathBuf,
}

#[derive(Debug, serde::Deserialize)]
struct Round {
    workload: String,
    broker: String,
    members: usize,
    publishers: usize,
    offered_rate: f64,
    deliveries_per_s: f64,
    p99_ms: f64,
    /// Absent from results written before `--pin` existed: unpinned.
    #[serde(default)]
    pinned: bool,
    /// Absent from results written before `--transport` existed: TCP.
    #[serde(default)]
    transport: Option<String>,
}

impl Round {
    /// The line a round belongs to: the broker, with the transport when it
    /// is not plain TCP.
    fn series(&self) -> String {
        match self.transport.as_deref() {
            None | Some("tcp") => self.broker.clone(),
            Some(transport) => format!("{} ({transport})", self.broker),
        }
    }
}

/// Latencies above this are drawn at it (the chart's top).
const LATENCY_CEILING_MS: f64 = 200.0;

/// Rounds of one configuration: broker -> offered rate -> rounds.
type ByBroker = BTreeMap<String, BTreeMap<u64, Vec<Round>>>;

const COLOURS: [(&str, RGBColor); 5] = [
    ("anteroom", RGBColor(0x1f, 0x77, 0xb4)),
    ("redis", RGBColor(0xd6, 0x27, 0x28)),
    ("nats", RGBColor(0x2c, 0xa0, 0x2c)),
    ("anteroom (tls)", RGBColor(0xff, 0x7f, 0x0e)),
    ("anteroom (quic)", RGBColor(0x94, 0x67, 0xbd)),
];

/// Writes `fanout-S-P-deliveries.svg` and `fanout-S-P-p99.svg` per
/// configuration, `fanout-S-P-pinned-*.svg` for runs with `--pin`: the two
/// modes are different machines, as far as the broker can tell.
pub fn run(args: Args) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.input)
        .with_context(|| format!("reading {}", args.input.display()))?;
    // (members, publishers, pinned) -> broker -> offered rate -> rounds.
    let mut series: BTreeMap<(usize, usize, bool), ByBroker> = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with('{')) {
        let Ok(round) = serde_json::from_str::<Round>(line) else {
            continue;
        };
        if round.workload != "fanout" {
            continue;
        }
        series
            .entry((round.members, round.publishers, round.pinned))
            .or_default()
            .entry(round.series())
            .or_default()
            .entry(round.offered_rate.round() as u64)
            .or_default()
            .push(round);
    }
    std::fs::create_dir_all(&args.output)?;
    let mut written = 0;
    for ((members, publishers, pinned), brokers) in &series {
        let mode = if *pinned { "-pinned" } else { "" };
        for (metric, label, value) in [
            (
                "deliveries",
                "deliveries/s (median)",
                (|r: &Round| r.deliveries_per_s) as fn(&Round) -> f64,
            ),
            (
                "p99",
                "p99 latency, ms (median; capped at 200)",
                |r: &Round| r.p99_ms,
            ),
        ] {
            let path = args
                .output
                .join(format!("fanout-{members}-{publishers}{mode}-{metric}.svg"));
            draw(
                &path,
                (*members, *publishers, *pinned),
                brokers,
                label,
                value,
                metric == "p99",
            )?;
            written += 1;
        }
    }
    println!("wrote {written} charts to {}", args.output.display());
    Ok(())
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn draw(
    path: &std::path::Path,
    (members, publishers, pinned): (usize, usize, bool),
    brokers: &ByBroker,
    label: &str,
    value: fn(&Round) -> f64,
    latency: bool,
) -> anyhow::Result<()> {
    let points: Vec<(String, Vec<(f64, f64)>)> = brokers
        .iter()
        .map(|(broker, by_rate)| {
            let pts = by_rate
                .iter()
                .map(|(rate, rounds)| {
                    let mut vs: Vec<f64> = rounds.iter().map(value).collect();
                    let v = median(&mut vs);
                    // Latencies far past the limit would flatten the chart.
                    (
                        *rate as f64,
                        if latency {
                            v.min(LATENCY_CEILING_MS)
                        } else {
                            v
                        },
                    )
                })
                .collect();
            (broker.clone(), pts)
        })
        .collect();
    let max_x = points
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(x, _)| *x))
        .fold(1.0, f64::max);
    let max_y = points
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(_, y)| *y))
        .fold(1.0, f64::max);
    let root = SVGBackend::new(path, (720, 440)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let pinned = if pinned { ", pinned" } else { "" };
    let caption = format!("fan-out, {members} members, {publishers} publishing{pinned}: {label}");
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70);
    let chart = builder
        .build_cartesian_2d(0.0..max_x * 1.05, 0.0..max_y * 1.1)
        .map_err(plot_error)?;
    // The sustainability limit is drawn on the latency chart.
    finish(
        chart,
        label,
        &points,
        latency.then_some((max_x * 1.05, 50.0)),
    )?;
    root.present().map_err(plot_error)?;
    Ok(())
}

fn plot_error<E: std::fmt::Display>(error: E) -> anyhow::Error {
    anyhow::anyhow!("drawing failed: {error}")
}

/// Draws the mesh, one line with points per broker, an optional horizontal
/// limit line (width, value) and the legend.
type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

fn finish<'a, 'b: 'a>(
    mut chart: Chart<'a, 'b>,
    label: &str,
    points: &[(String, Vec<(f64, f64)>)],
    limit: Option<(f64, f64)>,
) -> anyhow::Result<()> {
    chart
        .configure_mesh()
        .x_desc("offered rate, messages/s")
        .y_desc(label)
        .draw()
        .map_err(plot_error)?;
    for (broker, pts) in points {
        let colour = colour_of(broker);
        chart
            .draw_series(LineSeries::new(pts.clone(), colour.stroke_width(2)))
            .map_err(plot_error)?
            .label(broker.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
            });
        chart
            .draw_series(pts.iter().map(|p| Circle::new(*p, 3, colour.filled())))
            .map_err(plot_error)?;
    }
    if let Some((width, value)) = limit {
        chart
            .draw_series(LineSeries::new(
                vec![(0.0, value), (width, value)],
                BLACK.stroke_width(1),
            ))
            .map_err(plot_error)?
            .label(format!("{value} ms"))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLACK));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(plot_error)?;
    Ok(())
}

fn colour_of(broker: &str) -> RGBColor {
    COLOURS
        .iter()
        .find(|(name, _)| *name == broker)
        .map_or(RGBColor(0x55, 0x55, 0x55), |(_, c)| *c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transport_other_than_tcp_is_a_line_of_its_own() {
        let round = |extra: &str| -> Round {
            serde_json::from_str(&format!(
                r#"{{"workload":"fanout","broker":"anteroom","members":10,"publishers":1,"offered_rate":100.0,"deliveries_per_s":1000.0,"p99_ms":1.0{extra}}}"#
            ))
            .unwrap()
        };
        assert_eq!(round("").series(), "anteroom");
        assert_eq!(round(r#","transport":"tcp""#).series(), "anteroom");
        assert_eq!(round(r#","transport":"quic""#).series(), "anteroom (quic)");
        assert_ne!(colour_of("anteroom (tls)"), colour_of("anteroom"));
    }
}
