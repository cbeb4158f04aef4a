//! The README's Rust program is `examples/train_simple_nn.rs` verbatim (which `cargo test`
//! compiles), so the snippet a newcomer copies into a new project builds and runs as shown.

#[test]
fn the_readme_snippet_is_the_trainer_example_verbatim() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let example = std::fs::read_to_string(format!("{root}/examples/train_simple_nn.rs")).unwrap();
    // The example without its `//!` header.
    let body: String = example
        .lines()
        .filter(|l| !l.starts_with("//!"))
        .skip_while(|l| l.is_empty())
        .map(|l| format!("{l}\n"))
        .collect();
    let fenced = format!("```rust\n{body}```\n");
    assert!(readme.contains(&fenced), "the README's Trainer snippet differs from examples/train_simple_nn.rs:\n{body}");
    assert!(readme.contains("strata = { path = "), "the README says how to depend on strata");
}
