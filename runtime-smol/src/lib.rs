//! The smol/async-io driver of mdproxy's core. It comes in a later issue; this crate is empty
//! until then so that the workspace builds.
