//! Prints a generated pipeline: `gen-pipeline SHAPE COUNT [COMMAND] [--ninja] [--width W]` (shapes: linear,
//! fan-out, layered; `--ninja` prints the same graph as a `build.ninja`).

use buildit_benches::{Shape, ninja_text, pipeline_text};

fn main() -> std::process::ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let ninja = args.iter().any(|arg| arg == "--ninja");
    args.retain(|arg| arg != "--ninja");
    let width = match args.iter().position(|arg| arg == "--width") {
        Some(at) => {
            let value = args
                .get(at + 1)
                .and_then(|w| w.parse::<usize>().ok())
                .filter(|w| *w > 0);
            args.drain(at..(at + 2).min(args.len()));
            match value {
                Some(width) => Some(width),
                None => {
                    eprintln!("--width takes a positive number");
                    return std::process::ExitCode::from(2);
                }
            }
        }
        None => None,
    };
    let (Some(shape), Some(count)) = (
        args.first().and_then(|name| Shape::from_name(name)),
        args.get(1).and_then(|count| count.parse::<usize>().ok()),
    ) else {
        eprintln!(
            "usage: gen-pipeline linear|fan-out|layered COUNT [COMMAND] [--ninja] [--width W]"
        );
        return std::process::ExitCode::from(2);
    };
    let shape = match (shape, width) {
        (Shape::Layered { .. }, Some(width)) => Shape::Layered { width },
        (shape, _) => shape,
    };
    let command = args.get(2).map_or("true", String::as_str);
    if ninja {
        print!("{}", ninja_text(shape, count, command));
    } else {
        print!("{}", pipeline_text(shape, count, command));
    }
    std::process::ExitCode::SUCCESS
}
