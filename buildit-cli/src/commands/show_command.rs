//! The `buildit runs show` command that finds a run again from any directory, quoted for a POSIX shell.

use crate::cli::RunArgs;

/// The `buildit runs show` command for a run, shell-quoted, that finds the same store from any directory.
pub(crate) fn show_command(run_id: &str, workspace: &std::path::Path, args: &RunArgs) -> String {
    let mut words = vec![
        "buildit".to_owned(),
        "runs".to_owned(),
        "show".to_owned(),
        run_id.to_owned(),
        "--workspace".to_owned(),
        std::path::absolute(workspace)
            .unwrap_or_else(|_| workspace.to_path_buf())
            .display()
            .to_string(),
    ];
    if let Some(system) = &args.store.system {
        let system = std::path::absolute(system).unwrap_or_else(|_| system.clone());
        words.extend(["--system".to_owned(), system.display().to_string()]);
    }
    if let Some(url) = &args.store.database_url {
        // Taken from the environment, it is there for the next command too; a password is never printed.
        let from_env = std::env::var("BUILDIT_DATABASE_URL").is_ok_and(|env| env == *url);
        let has_password = url
            .split_once("://")
            .and_then(|(_, rest)| rest.split_once('@'))
            .is_some_and(|(user, _)| user.contains(':'))
            || url.to_ascii_lowercase().contains("password");
        if !from_env && !has_password {
            words.extend(["--database-url".to_owned(), url.clone()]);
        }
    }
    words
        .iter()
        .map(|word| shell_word(word))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `word` as one POSIX shell word: as it is when it holds only safe characters, else in single quotes.
fn shell_word(word: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_-./:@%+=,#".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}
