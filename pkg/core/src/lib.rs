//! kubox-core.
