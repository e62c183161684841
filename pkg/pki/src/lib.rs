//! kubox-pki.
