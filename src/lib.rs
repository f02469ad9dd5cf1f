//! biovm: builds reproducible, boot-tested bioinformatics machine images
//! from declarative recipes.
//!
//! The modules follow the pipeline: `config` (load + validate) →
//! `rootfs` (mmdebstrap) → `disk` (GPT raw disk) → `smoke` (QEMU boot test)
//! → `publish` (EC2, Eucalyptus).
//!
//! The public face is what the `biovm` binary and the tests in `tests/`
//! use, and every item of it is documented (`missing_docs` is denied);
//! everything else is `pub(crate)`.

pub(crate) mod boot_cuts;
pub(crate) mod build;
pub mod cli;
pub mod cmd;
pub mod config;
pub(crate) mod confined;
pub(crate) mod data;
pub mod disk;
pub(crate) mod doctor;
pub(crate) mod fetch;
pub mod formats;
pub mod fsutil;
pub mod lock;
pub(crate) mod manifest;
pub(crate) mod names;
pub(crate) mod pool;
pub(crate) mod progress;
pub(crate) mod publish;
pub(crate) mod pypi;
pub mod release;
pub mod rootfs;
pub(crate) mod run;
pub(crate) mod smoke;
pub mod sources;
pub(crate) mod sshkey;
pub(crate) mod store;
pub(crate) mod vendor;
pub(crate) mod workbench;
