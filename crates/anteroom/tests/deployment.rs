//! The deployment files keep the operator safe by default: only the chat
//! and web client ports (and the cluster nodes' chat ports) are published
//! beyond loopback, Grafana has no default password, every
//! container has a memory limit and rotated logs.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn compose() -> String {
    std::fs::read_to_string(root().join("docker-compose.yml")).unwrap()
}

/// Every `ports:` entry of every service, quotes removed.
fn published_ports(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_ports = false;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed == "ports:" {
            in_ports = true;
        } else if in_ports && trimmed.starts_with("- ") {
            out.push(trimmed[2..].trim_matches('"').to_string());
        } else if in_ports {
            in_ports = false;
        }
    }
    out
}

#[test]
fn only_the_chat_and_web_ports_are_published_beyond_loopback() {
    let ports = published_ports(&compose());
    // The single node's chat and web ports, and the `cluster` profile's
    // three nodes' chat ports.
    let public = [
        "7878:7878",
        "7880:7880",
        "7901:7878",
        "7902:7878",
        "7903:7878",
    ];
    for port in public {
        assert!(
            ports.iter().any(|p| p == port),
            "{port} missing from {ports:?}"
        );
    }
    for port in ports.iter().filter(|p| !public.contains(&p.as_str())) {
        assert!(
            port.starts_with("127.0.0.1:"),
            "{port} is published on every interface"
        );
    }
}

#[test]
fn grafana_has_no_default_password_and_every_service_is_bounded() {
    let text = compose();
    assert!(!text.contains(":-admin"), "a default Grafana password");
    // node-2 and node-3 take node-1's limits through its YAML anchor.
    let services = [
        "anteroom:",
        "redis:",
        "postgres:",
        "node-1:",
        "prometheus:",
        "grafana:",
    ];
    for service in services {
        assert!(text.contains(&format!("\n  {service}")), "{service}");
    }
    let limits = text.matches("mem_limit:").count();
    let logs = text.matches("logging: *logging").count();
    assert_eq!(limits, services.len(), "every service needs a memory limit");
    assert_eq!(logs, services.len(), "every service needs rotated logs");
    assert!(text.contains("max-size:") && text.contains("max-file:"));
}

#[test]
fn compose_refuses_to_start_without_an_admin_password() {
    if Command::new("docker-compose")
        .arg("version")
        .output()
        .is_err()
    {
        if std::env::var_os("CI").is_some() {
            panic!("docker-compose is missing; CI installs it");
        }
        eprintln!("skipped: docker-compose is not installed");
        return;
    }
    let run = |password: Option<&str>| {
        let mut cmd = Command::new("docker-compose");
        cmd.current_dir(root())
            .args(["-f", "docker-compose.yml", "config", "--quiet"])
            .env_remove("GRAFANA_ADMIN_PASSWORD");
        if let Some(p) = password {
            cmd.env("GRAFANA_ADMIN_PASSWORD", p);
        }
        cmd.output().unwrap()
    };
    let without = run(None);
    assert!(
        !without.status.success(),
        "compose started without a password"
    );
    assert!(String::from_utf8_lossy(&without.stderr).contains("GRAFANA_ADMIN_PASSWORD"));
    assert!(run(Some("s3cret")).status.success());
}
