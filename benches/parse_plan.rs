//! Parse + validate + plan of generated pipelines (100, 1,000, 10,000 stages; linear, fan-out, layered),
//! next to the `kdl` crate parsing the same text alone: BuildIt's own layers should be nearly free.

use std::hint::black_box;

use buildit_benches::{Shape, pipeline_text};
use buildit_core::{Plan, RunContext, parse_pipeline};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn parse_and_plan(c: &mut Criterion) {
    for shape in [Shape::Linear, Shape::FanOut, Shape::Layered { width: 100 }] {
        let mut group = c.benchmark_group(format!("parse_plan/{}", shape.name()));
        for count in [100usize, 1_000, 10_000] {
            let text = pipeline_text(shape, count, "true");
            group.throughput(Throughput::Bytes(text.len() as u64));
            if count >= 10_000 {
                group.sample_size(10);
            }
            group.bench_with_input(
                BenchmarkId::new("kdl_parse_only", count),
                &text,
                |b, text| {
                    b.iter(|| kdl::KdlDocument::parse(black_box(text)).map(|doc| doc.nodes().len()))
                },
            );
            group.bench_with_input(
                BenchmarkId::new("buildit_parse_validate_plan", count),
                &text,
                |b, text| {
                    b.iter(|| {
                        let pipeline = parse_pipeline(black_box(text), "bench.kdl").ok()?;
                        Plan::build(&pipeline, &RunContext::new())
                            .ok()
                            .map(|plan| plan.stages().len())
                    })
                },
            );
        }
        group.finish();
    }
}

/// Planning alone, on an already parsed pipeline: the cost BuildIt adds after parsing.
fn plan_only(c: &mut Criterion) {
    let mut group = c.benchmark_group("plan_only");
    for count in [1_000usize, 10_000] {
        let text = pipeline_text(Shape::Layered { width: 100 }, count, "true");
        let Ok(pipeline) = parse_pipeline(&text, "bench.kdl") else {
            continue;
        };
        group.bench_with_input(
            BenchmarkId::new("layered", count),
            &pipeline,
            |b, pipeline| {
                b.iter(|| {
                    Plan::build(black_box(pipeline), &RunContext::new())
                        .map(|plan| plan.stages().len())
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, parse_and_plan, plan_only);
criterion_main!(benches);
