//! The agent's `GET /metrics` as the storm reads it: Prometheus text or OpenMetrics (what
//! prometheus-client writes), parsed tolerantly into samples, and a family's samples summed
//! under label filters. Pure; a line it cannot read is skipped, never a panic.

/// Most bytes of an exposition read; the rest is ignored.
pub const TEXT_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Most labels kept on one sample; a sample with more is skipped.
const LABELS_PER_SAMPLE_MAX: usize = 64;

/// One sample line: `name{label="value",…} value [timestamp]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A label condition of [`Exposition::sum`].
#[derive(Clone, Copy, Debug)]
pub enum Label<'a> {
    /// The label has this value.
    Is(&'a str, &'a str),
    /// The label is absent or has another value.
    IsNot(&'a str, &'a str),
    /// The label has one of these values.
    In(&'a str, &'a [&'a str]),
}

impl Label<'_> {
    fn holds(&self, sample: &Sample) -> bool {
        match *self {
            Label::Is(k, v) => sample.label(k) == Some(v),
            Label::IsNot(k, v) => sample.label(k) != Some(v),
            Label::In(k, vs) => sample.label(k).is_some_and(|v| vs.contains(&v)),
        }
    }
}

/// Every sample of one scrape, in the order they came.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Exposition {
    pub samples: Vec<Sample>,
}

impl Exposition {
    /// Reads every sample line it can; comments (`# TYPE`, `# HELP`, `# UNIT`, `# EOF`),
    /// blank lines and lines it cannot read are skipped. Text past [`TEXT_BYTES_MAX`] is
    /// ignored.
    pub fn parse(text: &str) -> Exposition {
        let mut end = text.len().min(TEXT_BYTES_MAX);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let samples = text[..end]
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(sample)
            .collect();
        Exposition { samples }
    }

    /// The sum of the samples named `name` whose labels meet every condition; `None` when no
    /// sample has that name (the family is not exposed), so an absent figure is never shown
    /// as a zero. NaN samples count as nothing.
    pub fn sum(&self, name: &str, conditions: &[Label<'_>]) -> Option<f64> {
        let mut named = false;
        let mut total = 0.0;
        for s in self.samples.iter().filter(|s| s.name == name) {
            named = true;
            if conditions.iter().all(|c| c.holds(s)) && !s.value.is_nan() {
                total += s.value;
            }
        }
        named.then_some(total)
    }
}

/// One sample line, or `None` when it is not one.
fn sample(line: &str) -> Option<Sample> {
    let name_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        let (parsed, after) = label_set(after)?;
        labels = parsed;
        rest = after;
    }
    // The value is the first field after the name and labels; a timestamp or an exemplar
    // (`# {…} 1.0`) may follow.
    let value = value(rest.split_whitespace().next()?)?;
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// `label="value",…}` with the escapes `\\`, `\"` and `\n`; returns the labels and what
/// follows the closing brace.
fn label_set(mut s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start();
        if let Some(after) = s.strip_prefix('}') {
            return Some((labels, after));
        }
        if labels.len() >= LABELS_PER_SAMPLE_MAX {
            return None;
        }
        let eq = s.find('=')?;
        let key = s[..eq].trim();
        if key.is_empty()
            || !key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        {
            return None;
        }
        s = s[eq + 1..].trim_start().strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let close = loop {
            let (i, c) = chars.next()?;
            match c {
                '"' => break i,
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                c => value.push(c),
            }
        };
        labels.push((key.to_owned(), value));
        s = s[close + 1..].trim_start();
        s = s.strip_prefix(',').unwrap_or(s);
    }
}

fn value(field: &str) -> Option<f64> {
    match field {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        other => other.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What prometheus-client 0.25 writes (OpenMetrics), from a registry built here with
    /// the shapes the agent's metrics have: counters (the encoder adds `_total`), a gauge
    /// with a unit, label values that need escaping.
    fn real_exposition() -> String {
        use prometheus_client::encoding::EncodeLabelSet;
        use prometheus_client::metrics::counter::Counter;
        use prometheus_client::metrics::family::Family;
        use prometheus_client::metrics::gauge::Gauge;
        use prometheus_client::registry::{Registry, Unit};

        #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
        struct Alert {
            source: String,
            outcome: String,
        }
        let mut registry = Registry::default();
        let received = Family::<Alert, Counter>::default();
        registry.register("sre_alerts_received", "alerts taken", received.clone());
        let rss = Gauge::<i64>::default();
        registry.register_with_unit(
            "sre_process_resident_memory_peak",
            "peak RSS",
            Unit::Bytes,
            rss.clone(),
        );
        for (source, outcome, n) in [
            ("alertmanager", "opened", 3),
            ("alertmanager", "joined", 40),
            ("alertmanager", "unchanged", 77),
            ("api", "opened", 5),
            ("odd \"quoted\" \\ source\nline", "opened", 2),
        ] {
            received
                .get_or_create(&Alert {
                    source: source.into(),
                    outcome: outcome.into(),
                })
                .inc_by(n);
        }
        rss.set(123_456_789);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text
    }

    #[test]
    fn prometheus_client_output_is_read_with_its_escapes_and_summed_under_filters() {
        let text = real_exposition();
        assert!(text.ends_with("# EOF\n"), "{text}");
        let e = Exposition::parse(&text);
        let name = "sre_alerts_received_total";
        assert_eq!(e.sum(name, &[]), Some(127.0));
        assert_eq!(
            e.sum(
                name,
                &[
                    Label::Is("source", "alertmanager"),
                    Label::IsNot("outcome", "opened")
                ]
            ),
            Some(117.0)
        );
        assert_eq!(
            e.sum(name, &[Label::In("outcome", &["joined", "unchanged"])]),
            Some(117.0)
        );
        assert_eq!(
            e.sum(
                name,
                &[Label::Is("source", "odd \"quoted\" \\ source\nline")]
            ),
            Some(2.0),
            "escaped quotes, backslashes and newlines are read back as written"
        );
        assert_eq!(
            e.sum("sre_process_resident_memory_peak_bytes", &[]),
            Some(123_456_789.0)
        );
        assert_eq!(e.sum("sre_alerts_received", &[]), None, "no such sample");
        assert_eq!(e.sum("sre_not_exposed_total", &[]), None);
        assert_eq!(
            e.sum(name, &[Label::Is("source", "nobody")]),
            Some(0.0),
            "a family that is there but matches nothing is a zero, not absent"
        );
    }

    #[test]
    fn prometheus_text_with_timestamps_exemplars_and_special_values_is_read() {
        let e = Exposition::parse(
            "# HELP x_total a counter\n# TYPE x_total counter\n\
             x_total{a=\"1\"} 3 1700000000000\n\
             x_total{a=\"2\",} 4.5 # {trace_id=\"abc\"} 1.0\n\
             x_total 1e3\n\
             up NaN\n\
             h_bucket{le=\"+Inf\"} +Inf\n",
        );
        assert_eq!(e.sum("x_total", &[]), Some(1007.5));
        assert_eq!(e.sum("x_total", &[Label::Is("a", "2")]), Some(4.5));
        assert_eq!(e.sum("up", &[]), Some(0.0), "NaN counts as nothing");
        assert_eq!(e.samples[4].labels[0].1, "+Inf");
    }

    #[test]
    fn odd_text_never_panics_and_yields_what_it_can() {
        for text in [
            "",
            "\n\n# EOF",
            "{",
            "x{",
            "x{a=",
            "x{a=\"",
            "x{a=\"\\",
            "x{a=\"v\"",
            "x{a=\"v\"} ",
            "x{=\"v\"} 1",
            "x{a b=\"v\"} 1",
            "x{a=v} 1",
            "x 1 2 3 4",
            "x notanumber",
            "9x 1",
            "λ{a=\"b\"} 1",
            "x{a=\"λ\\λ\"} 2",
            "\u{0}\u{202E} 1",
        ] {
            let _ = Exposition::parse(text);
        }
        let e = Exposition::parse("garbage line\nok_total 2\nx{a=\"v\" 1\nok_total{b=\"c\"} 3\n");
        assert_eq!(e.sum("ok_total", &[]), Some(5.0));
        assert_eq!(e.samples.len(), 2);
        let many: String = (0..100).map(|i| format!("l{i}=\"v\",")).collect();
        assert!(
            Exposition::parse(&format!("x{{{many}}} 1"))
                .samples
                .is_empty()
        );
    }
}
