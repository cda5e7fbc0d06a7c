//! The external gateway's `token_url` (docs/interface.md, the token_url call): the signed
//! HTTP client the worker uses to save a payment source. Its local stand-in,
//! `gateway-sim`, is one of the tools beside the worker.

pub mod client;
pub mod request;
pub mod response;
pub mod signature;

pub use client::{ClientSettings, GatewayClient};
pub use request::{GatewayTarget, SaveRequest};
pub use response::{GatewayError, Tokens};
pub use signature::{TokenUrlError, shown_token_url, sign, validate_token_url, verify};
