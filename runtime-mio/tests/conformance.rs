//! The runtime conformance suite (`mdproxy_shell::conformance`) on the mio loop.

mdproxy_shell::conformance_tests!(mdproxy_mio::serve);
