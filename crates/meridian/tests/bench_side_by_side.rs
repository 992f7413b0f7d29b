//! The side-by-side benchmark's generator works against both servers:
//! `meridian bench --server meridian,ejabberd` starts a real `meridian dev`
//! and a real ejabberd (Debian's package, which `.ci/test` installs), and
//! every phase delivers messages over each. Figures are not asserted, only
//! that each phase measured something on each server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

/// The number in `line` right after `before`.
fn number_after(line: &str, before: &str) -> f64 {
    let rest = &line[line.find(before).unwrap() + before.len()..];
    let number: String = rest
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    number.parse().unwrap()
}

/// The line starting with `prefix`, failing with the whole output.
fn line<'a>(output: &'a str, prefix: &str) -> &'a str {
    output
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting {prefix:?} in:\n{output}"))
}

#[test]
fn every_phase_measures_both_servers() {
    let output = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args([
            "bench",
            "--server",
            "meridian,ejabberd",
            "--pairs",
            "4",
            "--pipeline",
            "2",
            "--seconds",
            "1",
            "--rate",
            "100",
            "--idle",
            "30",
        ])
        .env("RUST_LOG", "error")
        .output()
        .expect("running meridian bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "meridian bench failed (is ejabberd installed? `apt-get install ejabberd`)\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    for server in ["meridian", "ejabberd"] {
        let idle = line(&stdout, &format!("[{server}] idle connections:"));
        assert_eq!(number_after(idle, "idle connections:"), 30.0, "{idle}");
        let throughput = line(&stdout, &format!("[{server}] throughput:"));
        assert!(
            number_after(throughput, "throughput:") > 0.0,
            "{throughput}"
        );
        let latency = line(&stdout, &format!("[{server}] latency at 100 msg/s"));
        assert!(number_after(latency, "ms (") > 0.0, "{latency}");
    }
    // No send failed, bounced or went unanswered, no receiver dropped out.
    assert!(!stdout.contains("anomalies:"), "{stdout}");
    // ejabberd's messages never reach a disk; Meridian's every one does.
    assert!(stdout.contains("ejabberd keeps online messages in memory"));
}
