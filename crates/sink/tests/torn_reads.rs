//! Readers of a token file never see a partial, empty or mixed token while it is
//! being replaced, however often it is replaced.

use credkeeper_core::Secret;
use credkeeper_sink::write_token;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Two tokens of very different lengths, so a torn read would show as a wrong length
/// or a mix of characters.
fn token(i: usize) -> String {
    let (c, len) = if i.is_multiple_of(2) {
        ('a', 4000)
    } else {
        ('b', 9000)
    };
    std::iter::repeat_n(c, len).collect()
}

#[test]
fn readers_see_only_whole_tokens_while_the_file_is_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let path = Arc::new(dir.path().join("bt_test"));
    write_token(&path, &Secret::new(token(0))).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (path, stop, reads) = (path.clone(), stop.clone(), reads.clone());
            std::thread::spawn(move || {
                let (a, b) = (format!("{}\n", token(0)), format!("{}\n", token(1)));
                while !stop.load(Ordering::Relaxed) {
                    let seen = std::fs::read_to_string(&*path).expect("the file always exists");
                    assert!(seen == a || seen == b, "torn read: {} bytes", seen.len());
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    for i in 1..=2000 {
        write_token(&path, &Secret::new(token(i))).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().expect("a reader saw a torn token");
    }
    assert!(
        reads.load(Ordering::Relaxed) > 100,
        "readers must actually have raced the writer"
    );
    let leftovers = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(leftovers, 1, "no temporary files are left behind");
}
