//! kubox-openapi.
