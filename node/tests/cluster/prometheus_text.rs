//! A strict reader of the Prometheus text exposition format (version 0.0.4), for checking what
//! `/metrics` serves: every sample belongs to a family declared by `# TYPE` before it, families
//! are not interleaved, no series appears twice, label values use only the format's escapes,
//! counters are finite and non-negative, and histograms have cumulative buckets ending in
//! `+Inf` equal to their `_count`, and a `_sum`.

use std::collections::{BTreeMap, HashSet};

pub type Labels = BTreeMap<String, String>;

#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: Labels,
    pub value: f64,
}

#[derive(Debug, Clone)]
pub struct Family {
    pub kind: String,
    pub help: Option<String>,
    pub samples: Vec<Sample>,
}

#[derive(Debug, Clone, Default)]
pub struct Exposition {
    pub families: BTreeMap<String, Family>,
}

impl Exposition {
    /// The value of the series `name{labels}`; panics if it is absent.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.find(name, labels)
            .unwrap_or_else(|| panic!("no series {name}{labels:?} in the exposition"))
    }

    pub fn find(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let wanted: Labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.families
            .values()
            .flat_map(|f| &f.samples)
            .find(|s| s.name == name && s.labels == wanted)
            .map(|s| s.value)
    }

    /// Every series named `name`.
    pub fn samples(&self, name: &str) -> Vec<&Sample> {
        self.families
            .values()
            .flat_map(|f| &f.samples)
            .filter(|s| s.name == name)
            .collect()
    }
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_value(text: &str) -> Result<f64, String> {
    match text {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => text
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| format!("{text:?} is not a sample value")),
    }
}

/// Parses `{a="x",b="y"}` at the start of `text`; returns the labels and the rest.
fn parse_labels(text: &str) -> Result<(Labels, &str), String> {
    let mut labels = Labels::new();
    let mut rest = text.strip_prefix('{').ok_or("labels must start with {")?;
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let (name, after) = rest
            .split_once('=')
            .ok_or_else(|| format!("label without '=' in {text:?}"))?;
        if !is_label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        let mut chars = after
            .strip_prefix('"')
            .ok_or_else(|| format!("label {name} has an unquoted value"))?
            .char_indices();
        let mut value = String::new();
        let end = loop {
            match chars.next() {
                None => return Err(format!("label {name} has an unterminated value")),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("bad escape {other:?} in label {name}")),
                },
                Some((_, '\n')) => return Err(format!("raw newline in label {name}")),
                Some((_, c)) => value.push(c),
            }
        };
        if labels.insert(name.to_owned(), value).is_some() {
            return Err(format!("label {name} appears twice"));
        }
        rest = &after[1 + end + 1..];
        if let Some(after_comma) = rest.strip_prefix(',') {
            rest = after_comma;
        } else if !rest.starts_with('}') {
            return Err(format!("expected ',' or '}}' after label {name}"));
        }
    }
}

/// The family a sample named `name` belongs to, given the declared families.
fn family_of(name: &str, families: &BTreeMap<String, Family>) -> Option<String> {
    if families.contains_key(name) {
        return Some(name.to_owned());
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if let Some(family) = families.get(base) {
                let fits = match family.kind.as_str() {
                    "histogram" => true,
                    "summary" => suffix != "_bucket",
                    _ => false,
                };
                if fits {
                    return Some(base.to_owned());
                }
            }
        }
    }
    None
}

pub fn parse(text: &str) -> Result<Exposition, String> {
    if !text.is_empty() && !text.ends_with('\n') {
        return Err("the exposition does not end with a newline".into());
    }
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    let mut helps: BTreeMap<String, String> = BTreeMap::new();
    let mut finished: HashSet<String> = HashSet::new();
    let mut current: Option<String> = None;
    let mut seen: HashSet<(String, Vec<(String, String)>)> = HashSet::new();
    for (number, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", number + 1);
        if line.trim().is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.trim_start().splitn(3, ' ');
            match (words.next(), words.next(), words.next()) {
                (Some("HELP"), Some(name), help) => {
                    if !is_metric_name(name) {
                        return Err(at(format!("bad metric name {name:?}")));
                    }
                    let help = help.unwrap_or("");
                    let mut chars = help.chars();
                    while let Some(c) = chars.next() {
                        if c == '\\' && !matches!(chars.next(), Some('\\') | Some('n')) {
                            return Err(at("bad escape in HELP".into()));
                        }
                    }
                    if helps.insert(name.to_owned(), help.to_owned()).is_some() {
                        return Err(at(format!("second HELP for {name}")));
                    }
                    if let Some(family) = families.get_mut(name) {
                        family.help = Some(help.to_owned());
                    }
                }
                (Some("TYPE"), Some(name), Some(kind)) => {
                    if !is_metric_name(name) {
                        return Err(at(format!("bad metric name {name:?}")));
                    }
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        return Err(at(format!("unknown type {kind:?}")));
                    }
                    if families.contains_key(name) {
                        return Err(at(format!("second TYPE for {name}")));
                    }
                    families.insert(
                        name.to_owned(),
                        Family {
                            kind: kind.to_owned(),
                            help: helps.get(name).cloned(),
                            samples: Vec::new(),
                        },
                    );
                }
                (Some("TYPE"), _, _) => return Err(at("TYPE without a name and type".into())),
                _ => {} // a plain comment
            }
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .ok_or_else(|| at("a sample without a value".into()))?;
        let name = &line[..name_end];
        if !is_metric_name(name) {
            return Err(at(format!("bad metric name {name:?}")));
        }
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..]).map_err(at)?
        } else {
            (Labels::new(), &line[name_end..])
        };
        let mut fields = rest
            .strip_prefix(' ')
            .ok_or_else(|| at("no space before the value".into()))?
            .split(' ');
        let value = parse_value(fields.next().unwrap_or("")).map_err(at)?;
        if let Some(timestamp) = fields.next() {
            timestamp
                .parse::<i64>()
                .map_err(|_| at(format!("bad timestamp {timestamp:?}")))?;
        }
        if fields.next().is_some() {
            return Err(at("text after the timestamp".into()));
        }
        let family = family_of(name, &families)
            .ok_or_else(|| at(format!("{name} has no TYPE before it")))?;
        if current.as_deref() != Some(family.as_str()) {
            if finished.contains(&family) {
                return Err(at(format!("samples of {family} are not together")));
            }
            if let Some(previous) = current.replace(family.clone()) {
                finished.insert(previous);
            }
        }
        let key = (
            name.to_owned(),
            labels.clone().into_iter().collect::<Vec<_>>(),
        );
        if !seen.insert(key) {
            return Err(at(format!("{name}{labels:?} appears twice")));
        }
        let kind = families[&family].kind.clone();
        if kind == "counter" && !(value.is_finite() && value >= 0.0) {
            return Err(at(format!("counter {name} is {value}")));
        }
        families
            .get_mut(&family)
            .expect("found above")
            .samples
            .push(Sample {
                name: name.to_owned(),
                labels,
                value,
            });
    }
    for (name, family) in &families {
        if family.kind == "histogram" {
            check_histogram(name, family)?;
        }
    }
    Ok(Exposition { families })
}

fn check_histogram(name: &str, family: &Family) -> Result<(), String> {
    // Series are told apart by their labels other than `le`.
    let mut series: BTreeMap<Vec<(String, String)>, Vec<&Sample>> = BTreeMap::new();
    for sample in &family.samples {
        let key = sample
            .labels
            .iter()
            .filter(|(k, _)| k.as_str() != "le")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        series.entry(key).or_default().push(sample);
    }
    for (labels, samples) in series {
        let what = format!("histogram {name}{labels:?}");
        let mut buckets = Vec::new();
        for s in samples
            .iter()
            .filter(|s| s.name == format!("{name}_bucket"))
        {
            let le = s
                .labels
                .get("le")
                .ok_or_else(|| format!("{what}: a bucket without le"))?;
            buckets.push((parse_value(le)?, s.value));
        }
        if buckets.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(format!("{what}: bucket bounds do not increase"));
        }
        if buckets.windows(2).any(|w| w[0].1 > w[1].1) {
            return Err(format!("{what}: bucket counts are not cumulative"));
        }
        let inf = buckets
            .last()
            .filter(|(le, _)| *le == f64::INFINITY)
            .ok_or_else(|| format!("{what}: no +Inf bucket"))?
            .1;
        let find = |suffix: &str| {
            samples
                .iter()
                .find(|s| s.name == format!("{name}{suffix}"))
                .map(|s| s.value)
                .ok_or_else(|| format!("{what}: no {suffix}"))
        };
        if find("_count")? != inf {
            return Err(format!("{what}: _count differs from the +Inf bucket"));
        }
        find("_sum")?;
    }
    Ok(())
}

#[test]
fn the_reader_refuses_what_prometheus_would() {
    let good = "# HELP a_total Things.\n# TYPE a_total counter\na_total{x=\"1\\\"\"} 3\n\
        # TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3.5\nh_count 2\n";
    let parsed = parse(good).expect("valid");
    assert_eq!(parsed.value("a_total", &[("x", "1\"")]), 3.0);
    for bad in [
        "a 1\n",                                                          // no TYPE
        "# TYPE a gauge\na 1",                                            // no final newline
        "# TYPE a gauge\na{x=\"1} 1\n",     // unterminated label value
        "# TYPE a gauge\na{x=\"\\t\"} 1\n", // bad escape
        "# TYPE a gauge\na 1\na 2\n",       // duplicate series
        "# TYPE a counter\na -1\n",         // negative counter
        "# TYPE a gauge\n# TYPE b gauge\na 1\nb 1\na{x=\"y\"} 1\n", // interleaved
        "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n", // no +Inf
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
        "# TYPE a gauge\na one\n", // bad value
    ] {
        assert!(parse(bad).is_err(), "accepted {bad:?}");
    }
}
