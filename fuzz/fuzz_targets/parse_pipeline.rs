//! Fuzzes the pipeline and system parsers: no input may panic, and valid pipelines must plan.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(pipeline) = buildit_core::parse_pipeline(text, "fuzz.kdl") {
        // A validated pipeline always plans (a `--stage` selection is the only other failure).
        assert!(buildit_core::Plan::build(&pipeline, &buildit_core::RunContext::new()).is_ok());
    }
    let _ = buildit_core::parse_system(text, "fuzz-system.kdl");
});
