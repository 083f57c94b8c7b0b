//! What must not compile: a task function that captures variables.

#[test]
// trybuild builds procpool again in a crate of its own: with every feature that is
// async-nats and its tree, two minutes of CI for a check that no feature changes. The
// default-feature pass runs it; this one says it left it to that pass.
#[cfg_attr(
    feature = "nats",
    ignore = "run by the default-feature pass: features do not change what compiles here"
)]
fn capturing_closures_are_rejected_at_the_call_site() {
    let t = trybuild::TestCases::new();
    // The zero-size check is evaluated when the call is monomorphised, which `cargo
    // check` skips; a passing case makes trybuild run a full build for the batch.
    t.pass("tests/api/ui/non_capturing_closure.rs");
    t.compile_fail("tests/api/ui/capturing_closure.rs");
    t.compile_fail("tests/api/ui/capturing_process.rs");
}
