//! biovm: builds reproducible, boot-tested bioinformatics machine images
//! from declarative recipes.
//!
//! The modules follow the pipeline: `config` (load + validate) →
//! `rootfs` (mmdebstrap) → `disk` (GPT raw disk) → `smoke` (QEMU boot test)
//! → `publish` (EC2, Eucalyptus).

pub mod boot_cuts;
pub mod build;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod confined;
pub mod disk;
pub mod doctor;
pub mod fetch;
pub mod formats;
pub mod fsutil;
pub mod lock;
pub mod manifest;
pub mod progress;
pub mod publish;
pub mod pypi;
pub mod release;
pub mod rootfs;
pub mod run;
pub mod smoke;
pub mod sshkey;
