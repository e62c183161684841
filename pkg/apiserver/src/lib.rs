//! kubox-apiserver.
