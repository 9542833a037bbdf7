//! Where events go.

pub mod stdout;
