//! Running the real `meridian` binary from a test.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

#[allow(dead_code)] // not every test binary writes region files with [tls]
/// The `[tls]` table of `region`'s file, at the files `meridian certs
/// init` writes into `certs/` of the region directory.
pub fn tls_table(region: &str) -> String {
    format!(
        "[tls]\nca = \"certs/ca.pem\"\n\
         core_cert = \"certs/core.{region}.pem\"\ncore_key = \"certs/core.{region}.key\"\n\
         gateway_cert = \"certs/gateway.{region}.pem\"\ngateway_key = \"certs/gateway.{region}.key\"\n"
    )
}

#[allow(dead_code)] // nor runs certs init
/// Runs `meridian certs init` for the region files in `regions`.
pub fn certs_init(regions: &std::path::Path) {
    let status = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["certs", "init", "--regions-dir"])
        .arg(regions)
        .stdout(Stdio::null())
        .status()
        .expect("run meridian certs init");
    assert!(status.success(), "meridian certs init: {status}");
}

#[allow(dead_code)] // service_identities runs its own commands
/// Runs `meridian <args>`; returns the child and the REST base URL of the
/// first region it prints.
pub fn start_meridian<I, S>(args: I) -> (Child, String)
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut command = Command::new(env!("CARGO_BIN_EXE_meridian"));
    command.args(args).env("RUST_LOG", "warn");
    start_command(command)
}

#[allow(dead_code)]
/// Runs `command` (the `meridian` binary, set up by the caller); returns
/// the child and the REST base URL of the first region it prints.
pub fn start_command(command: Command) -> (Child, String) {
    let (child, base, _banner) = start_command_with_banner(command);
    (child, base)
}

/// [`start_command`], also returning the lines printed before that URL.
pub fn start_command_with_banner(mut command: Command) -> (Child, String, Vec<String>) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn meridian");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut banner = Vec::new();
    let base = loop {
        let line = lines
            .next()
            .expect("meridian printed its URLs")
            .expect("read");
        if let Some(rest) = line.trim().strip_prefix("REST") {
            let url = rest.split_whitespace().next().expect("url");
            break url.trim_end_matches("/v1").to_string();
        }
        banner.push(line);
    };
    // Keep draining stdout so the child never blocks on a full pipe (a test
    // helper thread, outside any simulated path).
    #[allow(clippy::disallowed_methods)]
    std::thread::spawn(move || for _ in lines {});
    (child, base, banner)
}

/// A free loopback port (the child binds it right after).
#[allow(dead_code)] // not every test binary runs two regions
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

#[allow(dead_code)]
/// A region file whose production addresses are unused and whose local
/// gateway is `gateway`, core on a free port, with `rest` appended.
pub fn region_file(name: &str, gateway: &str, rest: &str) -> String {
    format!(
        r#"name = "{name}"
[listen]
gateway = "127.0.0.1:0"
core = "127.0.0.1:0"
[advertise]
gateway = "127.0.0.1:0"
core = "127.0.0.1:0"
[local]
gateway = "{gateway}"
core = "127.0.0.1:{}"
{rest}"#,
        free_port()
    )
}

#[allow(dead_code)]
/// Spawns `meridian <args> --regions-dir … --data-dir …` and waits for the
/// line starting with `ready` it prints once serving; its output is then
/// drained.
pub fn spawn_until(args: &[&str], regions: &Path, data: &Path, ready: &str) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(args)
        .arg("--regions-dir")
        .arg(regions)
        .arg("--data-dir")
        .arg(data)
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn meridian");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    loop {
        let line = lines.next().expect("meridian printed").expect("read");
        if line.trim_start().starts_with(ready) {
            break;
        }
    }
    // A test helper thread, outside any simulated path.
    #[allow(clippy::disallowed_methods)]
    std::thread::spawn(move || for _ in lines {});
    child
}

#[allow(dead_code)]
/// Region files for `us-east` and `eu-west` on free loopback ports.
pub fn write_regions(dir: &Path) {
    for name in ["us-east", "eu-west"] {
        let gateway = format!("127.0.0.1:{}", free_port());
        let text = region_file(name, &gateway, &tls_table(name));
        std::fs::write(dir.join(format!("{name}.toml")), text).expect("write region file");
    }
    // Two processes share the deployment's CA from files.
    certs_init(dir);
}

#[allow(dead_code)]
/// Starts one region of `regions` as `meridian dev --region`; returns the
/// child and its REST base URL.
pub fn start_region(regions: &Path, region: &str, data: &Path, log: &[String]) -> (Child, String) {
    let mut args: Vec<std::ffi::OsString> = ["dev", "--region", region, "--send-rate", "10000"]
        .iter()
        .map(Into::into)
        .collect();
    args.extend(["--regions-dir".into(), regions.into()]);
    args.extend(["--data-dir".into(), data.into()]);
    args.extend(log.iter().map(Into::into));
    start_meridian(args)
}

#[allow(dead_code)]
/// Region files for GeoDNS: us-east (client prefixes 3.0.0.0/8 and
/// 127.1.0.0/16, gateways on 127.0.1.x) and eu-west (18.130.0.0/16 and
/// 127.2.0.0/16, on 127.0.2.x), each the other's
/// nearest, each gateway's admin listener on a free port of its own
/// address, with `[tls]` files; returns each region's first gateway.
pub fn write_geo_regions(dir: &Path) -> std::collections::BTreeMap<String, String> {
    let mut first = std::collections::BTreeMap::new();
    for (name, octet, prefix, other) in [
        ("us-east", 1, "3.0.0.0/8", "eu-west"),
        ("eu-west", 2, "18.130.0.0/16", "us-east"),
    ] {
        let gateway = format!("127.0.{octet}.1:{}", free_port());
        // A loopback block too, as the shipped files have: a resolver
        // asking from 127.{octet}.x.y is taken for a client of the region.
        let rest = format!(
            "[geodns]\nclient_prefixes = [\"{prefix}\", \"127.{octet}.0.0/16\"]\n\
             latency_ms = {{ {other} = 80 }}\n\
             [edge]\ngateway_admin_port = {}\n{}",
            free_port(),
            tls_table(name)
        );
        let text = region_file(name, &gateway, &rest);
        std::fs::write(dir.join(format!("{name}.toml")), text).expect("write region file");
        first.insert(name.to_string(), gateway);
    }
    certs_init(dir);
    first
}

#[allow(dead_code)]
/// A device sending `total` messages (`m0`, `m1`, …) to `conv` one after
/// another, each awaited until acknowledged; resolves to their `msg_id`s in
/// order.
pub fn send_stream(
    rest: &meridian_sdk::Rest,
    token: &str,
    conv: &str,
    total: usize,
    seed: u64,
) -> tokio::task::JoinHandle<Vec<String>> {
    let (rest, token, conv) = (rest.clone(), token.to_string(), conv.to_string());
    tokio::spawn(async move {
        let mut client = meridian_sdk::Client::new(&rest, &token, seed);
        client.connect(20).await.expect("the sender connects");
        let mut sent = Vec::new();
        for i in 0..total {
            let id = client.new_client_msg_id();
            let info = client
                .send(&conv, &id, &format!("m{i}"), None)
                .await
                .expect("the send is acknowledged");
            sent.push(info.msg_id);
        }
        sent
    })
}

#[allow(dead_code)]
/// `meridian geodns` on a free loopback port, home `home`, two gateways a
/// region, checking every 100 ms (300 ms timeout), with `extra` flags;
/// the process and where it answers.
pub fn spawn_geodns(
    regions: &Path,
    data: &Path,
    home: &str,
    extra: &[&str],
) -> (Child, std::net::SocketAddr) {
    let dns: std::net::SocketAddr = format!("127.0.0.1:{}", free_port())
        .parse()
        .expect("an address");
    let listen = dns.to_string();
    let mut args = vec![
        "geodns",
        "--listen",
        &listen,
        "--home",
        home,
        "--gateways",
        "2",
        "--check-interval-ms",
        "100",
        "--check-timeout-ms",
        "300",
    ];
    args.extend_from_slice(extra);
    (spawn_until(&args, regions, data, "GeoDNS"), dns)
}

#[allow(dead_code)]
/// `GET url`: its status and body (an admin listener's `/readyz` or
/// `/metrics`).
pub async fn get(url: &str) -> (u16, String) {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let answer = reqwest::get(url).await.expect("an answer");
    let status = answer.status().as_u16();
    (status, answer.text().await.expect("a body"))
}

#[allow(dead_code)]
/// The value of the first sample of `name` in Prometheus text `metrics`
/// whose labels contain `label` (any, when empty); 0 when there is none.
pub fn sample(metrics: &str, name: &str, label: &str) -> f64 {
    metrics
        .lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
        })
        .find(|line| line.contains(label))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

#[allow(dead_code)]
/// A child process killed when dropped, so a failed assertion leaves no
/// deployment holding its ports.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[allow(dead_code)]
/// `meridian dev --port-offset OFFSET` plus `extra` run in `dir` with no
/// region or data directory named (the built-in local regions): the
/// process and the REST base URL it prints first.
pub fn dev_in(dir: &Path, offset: u16, extra: &[&str]) -> (Killed, String) {
    let (child, base, _banner) = dev_in_with_banner(dir, offset, extra);
    (child, base)
}

#[allow(dead_code)]
/// [`dev_in`], also returning the lines printed before the first URL.
pub fn dev_in_with_banner(
    dir: &Path,
    offset: u16,
    extra: &[&str],
) -> (Killed, String, Vec<String>) {
    let (child, base, banner) = start_command_with_banner(dev_command(dir, offset, extra));
    (Killed(child), base, banner)
}

#[allow(dead_code)]
/// The command [`dev_in`] runs, not yet started.
pub fn dev_command(dir: &Path, offset: u16, extra: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_meridian"));
    command
        .args(["dev", "--port-offset", &offset.to_string()])
        .args(extra)
        .current_dir(dir)
        .env_remove("MERIDIAN_REGIONS_DIR")
        .env_remove("MERIDIAN_DATA_DIR")
        .env("RUST_LOG", "error");
    command
}
