//! The runtime conformance suite (`mdproxy_shell::conformance`) on the smol executor.

mdproxy_shell::conformance_tests!(mdproxy_smol::serve);
