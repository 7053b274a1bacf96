//! The projector runtime and the projectors built on it (see issue: projectors).
