//! kubox-core: the API object model shared by every other crate. No IO.
//!
//! Entry points: [`resources::Registry`] (which resources exist, how they are named and stored),
//! [`selectors`] (label and field selectors), [`meta`] (metadata accessors on raw JSON objects),
//! [`printers`] (Table columns), [`defaults`] and [`validation`] (built-in type semantics).
//! Objects are kept as `serde_json::Value` on the generic path (storage, patching, tables, CRDs).

pub mod defaults;
pub mod error;
pub mod meta;
pub mod names;
pub mod net;
pub mod printers;
pub mod quantity;
pub mod quota;
pub mod resources;
pub mod selectors;
pub mod validation;

pub use error::{Error, Result};
