//! Reading config files: YAML or JSON (by extension) into raw serde structs, with every
//! problem reported at once as `file: key.path: reason`.
//!
//! Each agent keeps a raw, `deny_unknown_fields` mirror of its config and turns it into a
//! validated type. Lists whose elements are independent (services, checks) are deserialized
//! one by one with [`Problems::take`], so that one bad service does not hide the errors of
//! the next one; inside one value, `take` removes each offending key and tries again, so
//! every bad key of every struct level is reported in one pass.
//!
//! The file itself must be a regular file (symlinks to one are fine) of at most
//! [`MAX_FILE_BYTES`]: `-c /dev/zero`, a FIFO or a directory fail at once.

mod env;
mod fields;
mod file;
mod problems;
mod shared;

pub use fields::*;
pub use file::*;
pub use problems::*;
pub use shared::*;

#[cfg(test)]
mod tests;
