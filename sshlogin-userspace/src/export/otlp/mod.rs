//! OTLP/HTTP specifics: the request body and what a receiver answers.

pub mod encode;
pub mod response;
