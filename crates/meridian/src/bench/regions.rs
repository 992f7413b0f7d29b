//! `meridian bench --cross-region`: two regions (us-east, eu-west) as
//! separate `meridian dev` processes whose links to each other pass through
//! an in-process proxy adding a one-way delay (this kernel has no netem).
//! Prints send→deliver latency for users homed in different regions at a
//! fixed offered rate, and the throughput of one replication link draining
//! a backlog queued while the link was cut. Figures are printed, never
//! asserted.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use futures::future::join_all;
use meridian_faultproxy::Proxy;
use meridian_sdk::{Rest, Session};
use meridian_seams::SystemClock;
use meridian_seams::net::TokioNetwork;
use meridian_testbed::free_port;

use super::metrics::{metrics_text, sum_in};
use super::{Pair, Server, fixed_rate_latency, now, percentile, sender_session, start_child};
use crate::deploy::LogKind;

pub(crate) struct Options {
    pub(crate) seconds: u64,
    pub(crate) pairs: usize,
    pub(crate) rate: u64,
    pub(crate) log: LogKind,
    pub(crate) delay: Duration,
    pub(crate) link_entries: u64,
    /// Cores in plaintext (`--insecure-core`) instead of mutual TLS.
    pub(crate) insecure_core: bool,
}

/// Writes a production-profile region file: bind on `core`, reached by the
/// other region through `advertised_core` (the delaying proxy).
fn write_region(
    dir: &Path,
    name: &str,
    gateway: u16,
    core: u16,
    advertised_core: u16,
    log: &str,
    tls: bool,
) -> anyhow::Result<()> {
    // The files `meridian certs init` writes into `certs/` beside them.
    let tls = if tls {
        format!(
            "[tls]\nca = \"certs/ca.pem\"\n\
             core_cert = \"certs/core.{name}.pem\"\ncore_key = \"certs/core.{name}.key\"\n\
             gateway_cert = \"certs/gateway.{name}.pem\"\ngateway_key = \"certs/gateway.{name}.key\"\n"
        )
    } else {
        String::new()
    };
    let text = format!(
        "name = \"{name}\"\n\
         [listen]\ngateway = \"127.0.0.1:{gateway}\"\ncore = \"127.0.0.1:{core}\"\n\
         [advertise]\ngateway = \"127.0.0.1:{gateway}\"\ncore = \"127.0.0.1:{advertised_core}\"\n\
         [local]\ngateway = \"127.0.0.1:{gateway}\"\ncore = \"127.0.0.1:{core}\"\n\
         {log}{tls}"
    );
    std::fs::write(dir.join(format!("{name}.toml")), text)?;
    Ok(())
}

/// A counter's value from Prometheus text, summed over series whose labels
/// include every one of `labels`.
async fn counter(base: &str, name: &str, labels: &[&str]) -> anyhow::Result<u64> {
    Ok(metric_sum(base, name, labels).await? as u64)
}

/// The sum of the samples of metric `name` at `base/metrics` (see [`sum_in`]).
async fn metric_sum(base: &str, name: &str, labels: &[&str]) -> anyhow::Result<f64> {
    Ok(sum_in(&metrics_text(base).await?, name, labels))
}

#[expect(
    clippy::too_many_lines,
    reason = "the benchmark's script, read top-down: regions and proxies up, warm-up, measured load, link drain, report"
)]
pub(crate) async fn run(options: Options) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let regions = dir.path().join("regions");
    std::fs::create_dir_all(&regions)?;
    let network = TokioNetwork::shared();
    let brokers = match options.log {
        LogKind::Embedded => None,
        LogKind::Kafka => Some((
            meridian_testbed::Broker::start(&network).await?,
            meridian_testbed::Broker::start(&network).await?,
        )),
    };
    let log_section = |broker: Option<&meridian_testbed::Broker>| match broker {
        None => "[log]\nkind = \"embedded\"\n".to_string(),
        Some(b) => format!(
            "[log]\nkind = \"kafka\"\nbrokers = \"{}\"\nreplication_factor = 1\n",
            b.bootstrap()
        ),
    };
    let (us_gateway, us_core, eu_gateway, eu_core) = (
        free_port(&network).await?,
        free_port(&network).await?,
        free_port(&network).await?,
        free_port(&network).await?,
    );
    let clock = Arc::new(SystemClock::new());
    let any = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    // to_us: how eu-west reaches us-east (its replication link from
    // us-east runs through it); to_eu: the other way.
    let to_us = Proxy::start(
        network.clone(),
        clock.clone(),
        any,
        format!("127.0.0.1:{us_core}"),
        options.delay,
    )
    .await?;
    let to_eu = Proxy::start(
        network.clone(),
        clock.clone(),
        any,
        format!("127.0.0.1:{eu_core}"),
        options.delay,
    )
    .await?;
    write_region(
        &regions,
        "us-east",
        us_gateway,
        us_core,
        to_us.addr().port(),
        &log_section(brokers.as_ref().map(|b| &b.0)),
        !options.insecure_core,
    )?;
    write_region(
        &regions,
        "eu-west",
        eu_gateway,
        eu_core,
        to_eu.addr().port(),
        &log_section(brokers.as_ref().map(|b| &b.1)),
        !options.insecure_core,
    )?;
    if !options.insecure_core {
        // Two processes share one CA: its files, as `meridian certs init`
        // writes them.
        let deployment = meridian_region::config::Deployment::load(&regions)?;
        meridian_identity::pki::init_dir(
            &regions.join("certs"),
            &meridian_region::identities::deployment_identities(&deployment),
        )?;
    }
    let start = async |region: &str| -> anyhow::Result<Server> {
        let mut args = vec![
            "dev".into(),
            "--profile".into(),
            "production".into(),
            "--region".into(),
            region.into(),
            "--regions-dir".into(),
            regions.display().to_string(),
            "--data-dir".into(),
            dir.path().join("data").display().to_string(),
            "--send-rate".into(),
            "1000000".into(),
            "--registrations-per-minute".into(),
            "1000000".into(),
        ];
        if options.insecure_core {
            args.push("--insecure-core".into());
        }
        start_child(&args).await
    };
    let us = start("us-east").await?;
    let eu = start("eu-west").await?;
    // The cross-region targets: p99 within the one-way delay plus this
    // margin (the embedded log adds the relay's and the apply's commits;
    // Kafka a broker's produce and fetch besides).
    let (log_name, target_margin_ms) = match options.log {
        LogKind::Embedded => ("embedded log", 10),
        LogKind::Kafka => ("Kafka log (tansu, SQLite storage)", 25),
    };
    println!(
        "two regions, {log_name}, {} ms one-way delay on the links (proxy)",
        options.delay.as_millis()
    );

    // Pairs: the sender homed in us-east, the receiver in eu-west.
    let us_rest = Rest::new(&us.base);
    let eu_rest = Rest::new(&eu.base);
    let mut pairs = Vec::with_capacity(options.pairs);
    let mut senders: Vec<(Arc<Session>, String)> = Vec::with_capacity(options.pairs);
    for i in 0..options.pairs {
        let a = us_rest.register(&format!("sender{i}")).await?;
        let b = eu_rest.register(&format!("receiver{i}")).await?;
        let conv = us_rest
            .with_token(&a.token)
            .direct(&b.user_id)
            .await?
            .conv_id;
        let sender = sender_session(&us_rest.ws_url(), &a.token).await?;
        senders.push((sender.clone(), conv.clone()));
        pairs.push(Pair::meridian(
            sender,
            Session::connect(&eu_rest.ws_url(), &b.token).await?,
            conv,
        ));
    }

    // Latency at a fixed offered rate, across the delayed link.
    let samples = fixed_rate_latency(
        pairs,
        options.rate,
        options.seconds,
        options.delay * 4 + Duration::from_secs(2),
    )
    .await;
    let latencies = &samples.delivered_latencies;
    let ms = |ns: u64| ns as f64 / 1e6;
    println!(
        "cross-region latency at {} msg/s offered (us-east -> eu-west): send->deliver p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} samples, {:.0} msg/s delivered; target p99 <= {} ms); send->sent p50 {:.2} ms, p99 {:.2} ms",
        options.rate,
        ms(percentile(latencies, 0.50)),
        ms(percentile(latencies, 0.99)),
        ms(latencies.last().copied().unwrap_or(0)),
        latencies.len(),
        samples.delivered as f64 / options.seconds as f64,
        options.delay.as_millis() + target_margin_ms,
        ms(percentile(&samples.acknowledged_latencies, 0.50)),
        ms(percentile(&samples.acknowledged_latencies, 0.99)),
    );
    println!("  {}", samples.tail);
    if let Some(anomalies) = &samples.anomalies {
        println!("  {anomalies}");
    }

    // Link throughput: queue a backlog behind a cut link, then heal it and
    // time the drain (eu-west applying what us-east's log holds).
    let relayed = |base: String| async move {
        counter(
            &base,
            "meridian_relayed_total",
            &["source=\"us-east\"", "destination=\"eu-west\""],
        )
        .await
    };
    let applied = |base: String| async move {
        counter(
            &base,
            "meridian_replication_applied_total",
            &["source=\"us-east\"", "destination=\"eu-west\""],
        )
        .await
    };
    to_us.cut();
    let sent = Arc::new(AtomicU64::new(0));
    let lanes = senders
        .iter()
        .flat_map(|(sender, conv)| (0..4).map(move |lane| (sender.clone(), conv.clone(), lane)));
    let fill = lanes.map(|(sender, conv, lane)| {
        let sent = sent.clone();
        let target = options.link_entries;
        async move {
            let mut n = 0u64;
            while sent.fetch_add(1, Ordering::Relaxed) < target {
                n += 1;
                if sender
                    .send(&conv, &format!("b{lane}-{n}"), "backlog", None, 0)
                    .await
                    .is_err()
                {
                    break;
                }
            }
        }
    });
    let filled_at = now();
    join_all(fill).await;
    let fill_secs = (now() - filled_at).as_secs_f64();
    // Everything accepted is relayed into us-east's log before the heal.
    let deadline = now() + Duration::from_secs(120);
    let mut in_log = relayed(us.base.clone()).await?;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let relayed_now = relayed(us.base.clone()).await?;
        if relayed_now == in_log || now() > deadline {
            break;
        }
        in_log = relayed_now;
    }
    let applied_before = applied(eu.base.clone()).await?;
    let backlog = in_log.saturating_sub(applied_before);
    to_us.heal();
    let healed_at = now();
    let mut first_applied = None;
    loop {
        let applied_now = applied(eu.base.clone()).await?;
        if first_applied.is_none() && applied_now > applied_before {
            first_applied = Some(now() - healed_at);
        }
        if applied_now >= in_log {
            break;
        }
        anyhow::ensure!(
            now() - healed_at < Duration::from_secs(300),
            "the link did not drain: {} of {backlog} applied",
            applied_now - applied_before
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drain = now() - healed_at;
    let reconnect = first_applied.context("nothing applied")?;
    let streaming = drain.saturating_sub(reconnect).as_secs_f64().max(0.001);
    println!(
        "link throughput (us-east -> eu-west, {log_name}): {backlog} queued entries drained in {:.2} s after the heal ({:.2} s of it reconnecting): {:.0} entries/s while streaming, {:.0} entries/s overall (backlog accepted at {:.0} msg/s; target >= 20000/s)",
        drain.as_secs_f64(),
        reconnect.as_secs_f64(),
        backlog as f64 / streaming,
        backlog as f64 / drain.as_secs_f64(),
        options.link_entries as f64 / fill_secs,
    );
    drop(us);
    drop(eu);
    drop(brokers);
    Ok(())
}
