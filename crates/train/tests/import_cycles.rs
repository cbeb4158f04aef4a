//! This crate's files import each other without cycles (see `strata-import-cycles` for what
//! counts as an import); a failure names the files of each cycle and the import behind each step.

#[test]
fn the_files_of_this_crate_import_each_other_without_cycles() {
    strata_import_cycles::assert_no_cycles(concat!(env!("CARGO_MANIFEST_DIR"), "/src"));
}
