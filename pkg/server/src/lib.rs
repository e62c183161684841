//! kubox-server.
