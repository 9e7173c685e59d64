//! The browser client in a real browser: runs the Node tests of `web/test`
//! (`npm run test:browser`: headless Chromium driven by playwright-core)
//! against this build's `anteroom` binary.
//!
//! They need Node with `web/node_modules` (`cd web && npm ci`) and
//! `/usr/bin/chromium` (`apt-get install chromium`). Without them this test
//! prints why it was skipped; under CI (`.ci/run` installs both) a missing
//! one is a failure.

use std::path::Path;
use std::process::{Command, Stdio};

mod support;

use support::required;

const BIN: &str = env!("CARGO_BIN_EXE_anteroom");
const CHROMIUM: &str = "/usr/bin/chromium";

fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn the_browser_client_in_chromium() {
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web");
    let ready = ((have("node") && have("npm"))
        || required("node", "node and npm are not installed"))
        && (web.join("node_modules").is_dir()
            || required(
                "web/node_modules",
                "web/node_modules is missing (cd web && npm ci)",
            ))
        && (Path::new(CHROMIUM).is_file()
            || required(
                "chromium",
                "/usr/bin/chromium is missing (apt-get install chromium)",
            ));
    if !ready {
        return;
    }
    let output = Command::new("npm")
        .args(["run", "--silent", "test:browser"])
        .current_dir(&web)
        .env("ANTEROOM_BIN", BIN)
        .stdin(Stdio::null())
        .output()
        .expect("run npm");
    // Shown by cargo test when the test fails, or with --nocapture.
    println!("{}", String::from_utf8_lossy(&output.stdout));
    println!("{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        output.status.success(),
        "the browser tests failed: {}",
        output.status
    );
}
