//! The macros' UI tests: every `pass` case compiles and runs, every `fail`
//! case is rejected with the error committed beside it in its `.stderr`.
//!
//! Regenerate the expected output with `TRYBUILD=overwrite cargo test -p
//! saga-macros --test ui`, then read the diff before committing.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
