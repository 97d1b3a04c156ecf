//! Prints a generated pipeline: `gen-pipeline SHAPE COUNT [COMMAND]` (shapes: linear, fan-out, layered).

use buildit_benches::{Shape, pipeline_text};

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(shape), Some(count)) = (
        args.first().and_then(|name| Shape::from_name(name)),
        args.get(1).and_then(|count| count.parse::<usize>().ok()),
    ) else {
        eprintln!("usage: gen-pipeline linear|fan-out|layered COUNT [COMMAND]");
        return std::process::ExitCode::from(2);
    };
    let command = args.get(2).map_or("true", String::as_str);
    print!("{}", pipeline_text(shape, count, command));
    std::process::ExitCode::SUCCESS
}
