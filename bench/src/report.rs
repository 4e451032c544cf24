//! The results table: both figures, the ratio ours/distribution, the target
//! from issue 3 or 5 and pass/fail against it.

use std::fmt::Write as _;

use serde_json::json;

/// Which direction is better for a metric's raw value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    /// Throughput: more is better; target is a minimum ratio ours/dist.
    Higher,
    /// Time or memory: less is better; target is a maximum ratio ours/dist.
    Lower,
}

/// Unit of a metric, which also decides how values print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Bytes per second, printed as MB/s (10^6).
    BytesPerSec,
    /// Requests (or images) per second.
    PerSec,
    /// Seconds, printed as ms.
    Seconds,
    /// Bytes, printed as MiB.
    Bytes,
}

impl Unit {
    fn label(self) -> &'static str {
        match self {
            Unit::BytesPerSec => "MB/s",
            Unit::PerSec => "/s",
            Unit::Seconds => "ms",
            Unit::Bytes => "MiB",
        }
    }

    fn format(self, v: f64) -> String {
        match self {
            Unit::BytesPerSec => format!("{:.1}", v / 1e6),
            Unit::PerSec => format!("{v:.0}"),
            Unit::Seconds => format!("{:.2}", v * 1e3),
            Unit::Bytes => format!("{:.1}", v / f64::from(1u32 << 20)),
        }
    }
}

/// A figure for one server: a value or why there is none.
pub type Figure = Result<f64, String>;

/// One row of the table.
#[derive(Debug, Clone)]
pub struct Row {
    /// What was measured.
    pub name: String,
    /// Unit of the raw values.
    pub unit: Unit,
    /// Our figure.
    pub ours: Option<Figure>,
    /// Distribution's figure.
    pub dist: Option<Figure>,
    /// Direction of "better".
    pub better: Better,
    /// Target ratio ours/dist (minimum for Higher, maximum for Lower).
    pub target: Option<f64>,
    /// An alternative way to pass (e.g. push ≥ 85% of the fsync rate):
    /// description and whether it holds.
    pub alt: Option<(String, bool)>,
    /// Conditions that must hold as well as the ratio target (e.g. an
    /// absolute rate, or "within 5% of ours without auth"): description and
    /// whether it holds.
    pub require: Vec<(String, bool)>,
    /// Anything worth printing with the row.
    pub note: String,
}

impl Row {
    /// A row without an alternative target or note.
    pub fn new(name: &str, unit: Unit, better: Better, target: Option<f64>) -> Row {
        Row {
            name: name.to_owned(),
            unit,
            ours: None,
            dist: None,
            better,
            target,
            alt: None,
            require: Vec::new(),
            note: String::new(),
        }
    }

    /// The same row with a note.
    #[must_use]
    pub fn with_note(mut self, note: impl Into<String>) -> Row {
        self.note = note.into();
        self
    }

    /// ours / dist, when both exist.
    pub fn ratio(&self) -> Option<f64> {
        match (&self.ours, &self.dist) {
            (Some(Ok(o)), Some(Ok(d))) if *d > 0.0 => Some(o / d),
            _ => None,
        }
    }

    /// `Some(true)` pass, `Some(false)` fail, `None` when not decidable
    /// (no target, or a figure missing).
    pub fn verdict(&self) -> Option<bool> {
        if matches!(self.ours, Some(Err(_))) {
            return Some(false);
        }
        let by_ratio = match (self.ratio(), self.target) {
            (Some(r), Some(t)) => Some(match self.better {
                Better::Higher => r >= t,
                Better::Lower => r <= t,
            }),
            _ => None,
        };
        let base = match (&self.alt, by_ratio) {
            (Some((_, true)), _) => Some(true),
            (_, v) => v,
        };
        if self.require.is_empty() {
            return base;
        }
        if self.require.iter().any(|(_, ok)| !ok) {
            return Some(false);
        }
        match (self.target, base) {
            // Only the requirements decide, and they hold.
            (None, None) => Some(true),
            (_, v) => v,
        }
    }

    fn target_text(&self) -> String {
        let mut parts = Vec::new();
        if let Some(t) = self.target {
            let base = match (self.better, self.unit) {
                (Better::Higher, _) => format!(">= {t:.2}x"),
                (Better::Lower, Unit::Seconds) => format!("<= {t:.2}x ({:.0}x faster)", 1.0 / t),
                (Better::Lower, _) => format!("<= {t:.2}x"),
            };
            parts.push(match &self.alt {
                Some((desc, _)) => format!("{base} or {desc}"),
                None => base,
            });
        }
        parts.extend(self.require.iter().map(|(desc, _)| desc.clone()));
        if parts.is_empty() {
            "-".to_owned()
        } else {
            parts.join(" and ")
        }
    }
}

fn figure_text(unit: Unit, f: Option<&Figure>) -> String {
    match f {
        None => "-".to_owned(),
        Some(Ok(v)) => unit.format(*v),
        Some(Err(_)) => "error".to_owned(),
    }
}

/// Renders the table (plain text, fixed-width columns) and the errors.
pub fn render(rows: &[Row]) -> String {
    let header = [
        "metric".to_owned(),
        "unit".to_owned(),
        "ours".to_owned(),
        "distribution".to_owned(),
        "ours/dist".to_owned(),
        "target (issues 3, 5)".to_owned(),
        "result".to_owned(),
    ];
    let mut table: Vec<[String; 7]> = vec![header];
    for r in rows {
        table.push([
            r.name.clone(),
            r.unit.label().to_owned(),
            figure_text(r.unit, r.ours.as_ref()),
            figure_text(r.unit, r.dist.as_ref()),
            r.ratio().map_or("-".to_owned(), |x| format!("{x:.2}x")),
            r.target_text(),
            match r.verdict() {
                Some(true) => "pass".to_owned(),
                Some(false) => "FAIL".to_owned(),
                None => "n/a".to_owned(),
            },
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|c| {
            table
                .iter()
                .map(|row| row[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for (i, row) in table.iter().enumerate() {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| {
                if c == 0 || c == 5 {
                    format!("{cell:<w$}", w = widths[c])
                } else {
                    format!("{cell:>w$}", w = widths[c])
                }
            })
            .collect();
        let _ = writeln!(out, "| {} |", cells.join(" | "));
        if i == 0 {
            let dashes: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
            let _ = writeln!(out, "|-{}-|", dashes.join("-|-"));
        }
    }
    for r in rows {
        if !r.note.is_empty() {
            let _ = writeln!(out, "note: {}: {}", r.name, r.note);
        }
        for (who, f) in [("ours", &r.ours), ("distribution", &r.dist)] {
            if let Some(Err(e)) = f {
                let _ = writeln!(out, "error: {}: {who}: {e}", r.name);
            }
        }
    }
    out
}

/// The rows as JSON, for keeping results.
pub fn to_json(rows: &[Row]) -> serde_json::Value {
    let fig = |f: &Option<Figure>| match f {
        Some(Ok(v)) => json!(v),
        Some(Err(e)) => json!({ "error": e }),
        None => serde_json::Value::Null,
    };
    json!(
        rows.iter()
            .map(|r| json!({
                "metric": r.name,
                "unit": r.unit.label(),
                "ours": fig(&r.ours),
                "distribution": fig(&r.dist),
                "ratio": r.ratio(),
                "target": r.target_text(),
                "pass": r.verdict(),
                "note": r.note,
            }))
            .collect::<Vec<_>>()
    )
}
