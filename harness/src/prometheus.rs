//! Envoy's admin `/stats/prometheus` text, parsed into samples.

/// One sample line: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    /// The label text between the braces, as written (empty without labels).
    pub labels: String,
    pub value: f64,
}

/// All samples of one scrape.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub samples: Vec<Sample>,
}

impl Metrics {
    /// Parses the Prometheus text format (comments and unreadable lines are skipped).
    pub fn parse(text: &str) -> Metrics {
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                let value: f64 = value.trim().parse().ok()?;
                let (name, labels) = match series.split_once('{') {
                    Some((n, rest)) => (n, rest.trim_end_matches('}')),
                    None => (series, ""),
                };
                Some(Sample {
                    name: name.to_string(),
                    labels: labels.to_string(),
                    value,
                })
            })
            .collect();
        Metrics { samples }
    }

    /// The sum of every sample of family `name`; `None` when there is none.
    pub fn get(&self, name: &str) -> Option<f64> {
        let mut found = None;
        for s in self.samples.iter().filter(|s| s.name == name) {
            *found.get_or_insert(0.0) += s.value;
        }
        found
    }

    /// Like [`Self::get`], 0 when absent.
    pub fn value(&self, name: &str) -> f64 {
        self.get(name).unwrap_or(0.0)
    }

    /// The sum of the samples of `name` whose labels contain `label` (e.g. `worker_id="0"`).
    pub fn with_label(&self, name: &str, label: &str) -> Option<f64> {
        let mut found = None;
        for s in self
            .samples
            .iter()
            .filter(|s| s.name == name && s.labels.contains(label))
        {
            *found.get_or_insert(0.0) += s.value;
        }
        found
    }

    /// Family names starting with `prefix`, for error messages.
    pub fn names_with(&self, prefix: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .samples
            .iter()
            .filter(|s| s.name.starts_with(prefix))
            .map(|s| s.name.clone())
            .collect();
        names.dedup();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_families_and_labels() {
        let m = Metrics::parse("# TYPE a counter\na 3\nb{x=\"1\"} 2\nb{x=\"2\"} 5\nbad line\n");
        assert_eq!(m.get("a"), Some(3.0));
        assert_eq!(m.get("b"), Some(7.0));
        assert_eq!(m.with_label("b", "x=\"2\""), Some(5.0));
        assert_eq!(m.get("c"), None);
    }
}
