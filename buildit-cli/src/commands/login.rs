//! `buildit login` / `logout`: the daemon and token the remote commands use when neither a flag nor the
//! environment gives them, kept in a file only its owner can read.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::cli::RemoteArgs;
use crate::exit::Exit;
use crate::report::error_line;

/// What `buildit login` remembers.
#[derive(Debug, Serialize, Deserialize)]
struct Login {
    server: String,
    token: String,
}

/// `~/.config/buildit/login.json` (or under `XDG_CONFIG_HOME`).
fn login_file() -> Option<PathBuf> {
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))?;
    Some(config.join("buildit").join("login.json"))
}

/// The login file's contents; `None` when there is none. A file others can read is refused: it holds a token.
fn read_login() -> Result<Option<Login>, Exit> {
    let Some(path) = login_file() else {
        return Ok(None);
    };
    let metadata = match std::fs::metadata(&path) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => {
            error_line(&format!("cannot read `{}`: {error}", path.display()), None);
            return Err(Exit::Usage);
        }
    };
    if metadata.permissions().mode() & 0o077 != 0 {
        error_line(
            &format!(
                "`{}` holds a token and others can read it; it is not used",
                path.display()
            ),
            Some(&format!(
                "`chmod 600 {}`, or `buildit login` again",
                path.display()
            )),
        );
        return Err(Exit::Usage);
    }
    let text = std::fs::read_to_string(&path).map_err(|error| {
        error_line(&format!("cannot read `{}`: {error}", path.display()), None);
        Exit::Usage
    })?;
    serde_json::from_str(&text).map(Some).map_err(|error| {
        error_line(
            &format!("`{}` is not a login file: {error}", path.display()),
            Some("`buildit login` writes it again"),
        );
        Exit::Usage
    })
}

/// The server and token a remote command uses: its flags, else the environment (clap reads both), else the
/// login file.
pub(crate) fn resolve(remote: &RemoteArgs) -> Result<(String, String), Exit> {
    let saved = match (&remote.server, &remote.token) {
        (Some(_), Some(_)) => None,
        _ => read_login()?,
    };
    let server = remote
        .server
        .clone()
        .or_else(|| saved.as_ref().map(|login| login.server.clone()));
    let token = remote
        .token
        .clone()
        .or_else(|| saved.as_ref().map(|login| login.token.clone()));
    match (server, token) {
        (Some(server), Some(token)) => Ok((server, token)),
        _ => {
            error_line(
                "no daemon to talk to",
                Some(
                    "give `--server URL --token TOKEN`, set `BUILDIT_SERVER` and `BUILDIT_TOKEN`, or `buildit login`",
                ),
            );
            Err(Exit::Usage)
        }
    }
}

pub(crate) fn login(args: &RemoteArgs) -> Exit {
    let (Some(server), Some(token)) = (&args.server, &args.token) else {
        error_line(
            "`buildit login` needs the daemon and a token",
            Some("`buildit login --server URL --token TOKEN` (`buildit tokens create` makes one)"),
        );
        return Exit::Usage;
    };
    let runtime = match super::runtime() {
        Ok(runtime) => runtime,
        Err(exit) => return exit,
    };
    // Checked against the daemon before it is kept: a wrong token is said now, not at the next trigger.
    let checked = runtime.block_on(async {
        let mut client = super::remote::connect(server).await?;
        client
            .list_runs(super::remote::authorized(
                buildit_grpc::proto::ListRunsRequest {
                    page_size: 1,
                    ..buildit_grpc::proto::ListRunsRequest::default()
                },
                token,
            ))
            .await
            .map(|_| ())
            .map_err(|status| super::remote::refused(&status))
    });
    if let Err(exit) = checked {
        return exit;
    }
    let Some(path) = login_file() else {
        error_line("no home directory to keep the login in", Some("set `HOME`"));
        return Exit::Usage;
    };
    let login = Login {
        server: server.clone(),
        token: token.clone(),
    };
    let written = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| {
            // Created readable by its owner only; an older file gets the same mode before it is written.
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)?;
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            file.write_all(serde_json::to_string(&login).unwrap_or_default().as_bytes())
        });
    match written {
        Ok(()) => {
            eprintln!("logged in to {server} (kept in `{}`)", path.display());
            Exit::Success
        }
        Err(error) => {
            error_line(&format!("cannot write `{}`: {error}", path.display()), None);
            Exit::Infrastructure
        }
    }
}

pub(crate) fn logout() -> Exit {
    if let Some(path) = login_file() {
        match std::fs::remove_file(&path) {
            Ok(()) => eprintln!("logged out (`{}` removed)", path.display()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                error_line(
                    &format!("cannot remove `{}`: {error}", path.display()),
                    None,
                );
                return Exit::Infrastructure;
            }
        }
    }
    Exit::Success
}
