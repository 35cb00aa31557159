//! The one RocksDB instance: the embedded log and every projection, in column families.

use crate::keys;
use rocksdb::{ColumnFamilyDescriptor, Options, DB};
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("codec: {0}")]
    Codec(#[from] taskledger_core::codec::CodecError),
    #[error("missing column family {0}")]
    MissingCf(&'static str),
    #[error("log: {0}")]
    Log(#[from] taskledger_core::log::LogError),
}

/// Opens (or creates) the database under `dir`.
pub fn open(dir: &Path) -> Result<Arc<DB>, StoreError> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.increase_parallelism(2);
    opts.set_max_background_jobs(2);
    let cfs = keys::ALL_CFS.iter().map(|name| {
        let mut cf = Options::default();
        cf.set_write_buffer_size(32 << 20);
        ColumnFamilyDescriptor::new(*name, cf)
    });
    Ok(Arc::new(DB::open_cf_descriptors(&opts, dir, cfs)?))
}

pub(crate) fn cf<'a>(
    db: &'a DB,
    name: &'static str,
) -> Result<&'a rocksdb::ColumnFamily, StoreError> {
    db.cf_handle(name).ok_or(StoreError::MissingCf(name))
}
