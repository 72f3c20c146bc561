//! How much one socket or listener may do before its loop turns to the others. Both loops
//! stop there and come back by themselves (no new readiness event is needed), so a peer that
//! sends without pause, or a flood of connections, delays the rest by one turn at most.

/// Bytes one read asks for: the loop's one scratch buffer.
pub const READ_CHUNK: usize = 64 * 1024;

/// Reads from one socket per turn (so at most 1 MiB).
pub const READS_PER_TURN: usize = 16;

/// Connections taken from one listener per turn, at most. (The smol executor's accept task
/// takes one per turn: yielding is what lets a new socket's task read before the next accept.)
pub const ACCEPTS_PER_TURN: usize = 16;
