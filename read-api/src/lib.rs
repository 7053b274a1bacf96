//! HTTP queries over the read models (see issue: read-api).
