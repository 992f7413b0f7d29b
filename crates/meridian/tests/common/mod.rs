//! Running the real `meridian` binary from a test.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// Runs `meridian <args>`; returns the child and the REST base URL of the
/// first region it prints.
pub fn start_meridian<I, S>(args: I) -> (Child, String)
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut child = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn meridian");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let base = loop {
        let line = lines
            .next()
            .expect("meridian printed its URLs")
            .expect("read");
        if let Some(rest) = line.trim().strip_prefix("REST") {
            let url = rest.split_whitespace().next().expect("url");
            break url.trim_end_matches("/v1").to_string();
        }
    };
    // Keep draining stdout so the child never blocks on a full pipe (a test
    // helper thread, outside any simulated path).
    #[allow(clippy::disallowed_methods)]
    std::thread::spawn(move || for _ in lines {});
    (child, base)
}
