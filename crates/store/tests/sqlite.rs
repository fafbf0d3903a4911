//! The store's specification (tests/spec) over the embedded SQLite backend; handles on one
//! file stand for processes sharing it.

mod spec;

use credkeeper_store::{SqliteStore, Store};
use std::sync::Arc;

type Opener = Box<dyn Fn() -> Arc<dyn Store> + Sync>;

fn fresh() -> (Opener, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let open: Opener =
        Box::new(move || Arc::new(SqliteStore::open(&path).unwrap()) as Arc<dyn Store>);
    (open, dir)
}

spec_tests!(fresh);

#[test]
fn nothing_the_spec_stores_rests_in_clear_text() {
    let (open, dir) = fresh();
    spec::access_tokens_and_health_are_kept_and_a_new_login_clears_the_health(&*open);
    spec::shared_state_expires_is_kept_once_and_is_taken_once(&*open);
    spec::task_runs_are_kept_newest_first_up_to_a_limit(&*open);
    spec::a_batch_of_runs_is_kept_whole_and_each_task_keeps_its_own_limit(&*open);
    spec::task_secrets_round_trip_by_name(&*open);
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        for canary in spec::CANARIES {
            assert!(
                !bytes.windows(canary.len()).any(|w| w == *canary),
                "{}: {} in clear text",
                path.display(),
                String::from_utf8_lossy(canary)
            );
        }
    }
}
