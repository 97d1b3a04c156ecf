//! Generators of large pipelines for BuildIt's benchmarks and comparison scripts, and a client of the daemon.

pub mod daemon_client;

use std::fmt::Write as _;

/// The shape of a generated pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Each stage needs the one before it.
    Linear,
    /// One root; every other stage needs it.
    FanOut,
    /// Layers of `width` stages; each needs 2-3 distinct stages of the layer before.
    Layered {
        /// Stages per layer.
        width: usize,
    },
}

impl Shape {
    /// Parses `linear`, `fan-out` or `layered` (width 100).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "linear" => Some(Self::Linear),
            "fan-out" => Some(Self::FanOut),
            "layered" => Some(Self::Layered { width: 100 }),
            _ => None,
        }
    }

    /// The names the shapes go by.
    pub fn name(self) -> &'static str {
        match self {
            Self::Linear => "linear",
            Self::FanOut => "fan-out",
            Self::Layered { .. } => "layered",
        }
    }

    /// Indices of the stages that stage `index` needs.
    pub fn needs(self, index: usize) -> Vec<usize> {
        match self {
            Self::Linear if index > 0 => vec![index - 1],
            Self::FanOut if index > 0 => vec![0],
            Self::Layered { width } if index >= width => {
                let layer_start = (index / width - 1) * width;
                let position = index % width;
                // 2 or 3 needs, spread over the previous layer, deterministic.
                let count = 2 + index % 2;
                let mut needs: Vec<usize> = (0..count)
                    .map(|k| layer_start + (position + k * 7) % width)
                    .collect();
                needs.sort_unstable();
                needs.dedup();
                needs
            }
            _ => Vec::new(),
        }
    }
}

/// A `build.ninja` with the same stages and needs as [`pipeline_text`], each running `command`.
pub fn ninja_text(shape: Shape, count: usize, command: &str) -> String {
    let mut text = String::with_capacity(count * 40);
    let _ = write!(text, "rule run\n  command = {command}\n\n");
    for index in 0..count {
        let _ = write!(text, "build s{index}: run");
        let needs = shape.needs(index);
        if !needs.is_empty() {
            text.push_str(" |");
            for need in needs {
                let _ = write!(text, " s{need}");
            }
        }
        text.push('\n');
    }
    text.push_str("build all: phony");
    for index in 0..count {
        let _ = write!(text, " s{index}");
    }
    text.push_str("\ndefault all\n");
    text
}

/// A `buildit.kdl` with `count` stages of `shape`, each running `command`.
pub fn pipeline_text(shape: Shape, count: usize, command: &str) -> String {
    let mut text = String::with_capacity(count * 80);
    let _ = writeln!(text, "pipeline \"generated-{}-{count}\"", shape.name());
    for index in 0..count {
        let _ = write!(text, "stage \"s{index}\" {{\n    run \"{command}\"\n");
        let needs = shape.needs(index);
        if !needs.is_empty() {
            text.push_str("    needs");
            for need in needs {
                let _ = write!(text, " \"s{need}\"");
            }
            text.push('\n');
        }
        text.push_str("}\n");
    }
    text
}
