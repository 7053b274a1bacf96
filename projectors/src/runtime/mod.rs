//! The projector runtime: what every projector shares, whatever its store. [`sink`] is the
//! seam a store implements; [`triage`] sorts each batch once; [`commit`] commits it.

pub mod commit;
pub mod sink;
pub mod triage;
