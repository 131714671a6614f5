//! openraft's storage conformance suite, against both disks.

use cairn_raft_store::disk::{FjallDisk, FjallOptions, MemDisk};
use cairn_raft_store::{open_store, Limits, LogStore, StateMachineStore, StorageError, TypeConfig};
use openraft::testing::log::{StoreBuilder, Suite};

use crate::common::run;

struct DiskBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for DiskBuilder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let disk = FjallDisk::open(dir.path(), FjallOptions::default()).expect("open the store");
        let store = open_store(disk, Limits::default()).expect("open store");
        Ok((dir, store.log, store.state_machine))
    }
}

struct MemBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, ()> for MemBuilder {
    async fn build(&self) -> Result<((), LogStore, StateMachineStore), StorageError> {
        let store = open_store(MemDisk::new(), Limits::default()).expect("open store");
        Ok(((), store.log, store.state_machine))
    }
}

#[test]
fn openraft_suite_passes_on_the_production_disk() {
    run(Suite::test_all(DiskBuilder)).expect("openraft storage suite on the production disk");
}

#[test]
fn openraft_suite_passes_on_the_memory_model() {
    run(Suite::test_all(MemBuilder)).expect("openraft storage suite on the memory model");
}
