//! Fill a store with many credentials for benchmarks (bench/broker.sh).
//!
//! seed_store STATE_DIR COUNT ISSUER CLIENT_ID REFRESH_TOKEN_FILE
//! stores the same refresh token under identities bench-0 … bench-(COUNT-1).

use credkeeper_core::Secret;
use credkeeper_store::{CredentialKey, CredentialStore, SqliteStore};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 6 {
        eprintln!("usage: seed_store STATE_DIR COUNT ISSUER CLIENT_ID REFRESH_TOKEN_FILE");
        std::process::exit(2);
    }
    let store = SqliteStore::open(args[1].as_ref()).expect("open store");
    let count: usize = args[2].parse().expect("COUNT is a number");
    let rt = Secret::new(
        std::fs::read_to_string(&args[5])
            .expect("read refresh token")
            .trim(),
    );
    for i in 0..count {
        let key = CredentialKey::new(&args[3], &args[4], &format!("bench-{i}"));
        store.put(&key, &rt, None, None).expect("put");
    }
    eprintln!("stored {count} credentials in {}", args[1]);
}
