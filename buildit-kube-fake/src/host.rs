//! The address at which the fake cluster's pods (containers on Docker's default bridge) reach this machine: where
//! a test serves what pods fetch (a git repository, a daemon's source links).

use crate::options::FakeOptions;

/// The address pods reach this machine at: the default route of a container on Docker's default bridge (the
/// bridge's gateway), found by running one of the pause image.
pub fn host_seen_from_pods() -> std::io::Result<String> {
    let image = FakeOptions::default().pause_image;
    let output = std::process::Command::new("docker")
        .args(["run", "--rm", &image, "sh", "-c"])
        .arg("ip route | awk '/^default/ { print $3 }'")
        .output()?;
    let address = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if address.is_empty() {
        return Err(std::io::Error::other(format!(
            "no default route in a container of {image}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(address)
}
