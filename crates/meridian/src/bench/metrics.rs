//! Reading a server's `/metrics` page (Prometheus text) for the figures
//! the benchmark prints.

/// The Prometheus text at `base/metrics`.
pub(crate) async fn metrics_text(base: &str) -> anyhow::Result<String> {
    Ok(reqwest::get(format!("{base}/metrics"))
        .await?
        .text()
        .await?)
}

/// The sum of the samples of metric `name` in Prometheus `text`: the series
/// whose line starts with it and whose labels include every one of `labels`.
pub(crate) fn sum_in(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|line| line.starts_with(name) && labels.iter().all(|l| line.contains(l)))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
