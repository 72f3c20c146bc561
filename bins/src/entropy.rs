//! Randomness from the operating system, for the server's IMDSv2 tokens and the demo's
//! shared secret.

use std::sync::Arc;

use mdproxy_core::metadata::Entropy;

/// `getrandom(2)`.
pub struct OsEntropy;

impl OsEntropy {
    /// Checks once that the system's random source works, so a broken one stops the start
    /// rather than a request.
    pub fn new() -> Result<Arc<OsEntropy>, String> {
        getrandom::fill(&mut [0u8; 16])
            .map_err(|e| format!("the system's random source does not work: {e}"))?;
        Ok(Arc::new(OsEntropy))
    }
}

impl Entropy for OsEntropy {
    fn fill(&self, buf: &mut [u8]) {
        // It worked at startup; failing now means the system is broken, and tokens must not
        // be predictable.
        if let Err(e) = getrandom::fill(buf) {
            panic!("the system's random source failed: {e}");
        }
    }
}
