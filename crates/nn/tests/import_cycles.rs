//! This crate's files import each other without cycles (see `strata-import-cycles` for what
//! counts as an import); a failure names the files of each cycle and the import behind each step.
//! The layout (`crates/nn/README.md`) keeps imports one way: data, then the layer trait, then the
//! kinds, then the registry, then the machinery.

#[test]
fn the_files_of_this_crate_import_each_other_without_cycles() {
    let graph = strata_import_cycles::assert_no_cycles(concat!(env!("CARGO_MANIFEST_DIR"), "/src"));
    // The check sees the imports it is meant to: a kind's file on the layer trait, the walker on
    // the merge rules, an optimizer on its folder's shared parts.
    assert!(
        graph.imports("linear").contains("layer") && graph.imports("check::walker").contains("check::merge"),
        "{graph:?}"
    );
    assert!(graph.imports("optim::adam").contains("optim"), "{graph:?}");
}
