//! kubox-patch.
