//! Parses a file with the `kdl` crate alone and nothing else: the reference BuildIt's validate is compared to.

fn main() -> std::process::ExitCode {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: kdl-parse FILE");
        return std::process::ExitCode::from(2);
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) => {
            eprintln!("cannot read {path}: {error}");
            return std::process::ExitCode::from(3);
        }
    };
    match kdl::KdlDocument::parse(&text) {
        Ok(document) => {
            println!("{} nodes", document.nodes().len());
            std::process::ExitCode::SUCCESS
        }
        Err(_) => std::process::ExitCode::from(3),
    }
}
