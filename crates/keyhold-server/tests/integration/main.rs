//! Integration tests: the real server on a loopback port, driven by the AWS SDK for Rust and
//! by raw requests signed with `aws-sigv4`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

mod aliases_tags;
mod asymmetric;
mod auth;
mod bad_input;
mod console;
mod crypto;
mod grants;
mod hostile;
mod import;
mod keys;
mod managed;
mod operator;
mod policies;
mod regions;
mod rotation;
mod tls;
