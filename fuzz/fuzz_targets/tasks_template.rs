//! The `{{ NAME }}` templates of task definitions and values files
//! (credkeeper_tasks::template::{names, render}, definition::fill). Never panics; a text
//! that names nothing renders to itself, and rendering with every name defined succeeds.
#![no_main]

use credkeeper_tasks::definition;
use credkeeper_tasks::template::{self, Vars};
use libfuzzer_sys::fuzz_target;

struct Every;
impl Vars for Every {
    fn get(&self, name: &str) -> Option<String> {
        Some(format!("<{name}>"))
    }
}

struct Nothing;
impl Vars for Nothing {
    fn get(&self, _: &str) -> Option<String> {
        None
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let names = template::names(text);
    for name in &names {
        assert!(template::valid_name(name), "{name:?}");
    }
    assert!(template::render(text, &Every).is_ok());
    if names.is_empty() {
        assert_eq!(template::render(text, &Nothing).as_deref(), Ok(text));
    }
    let _ = definition::fill(text, &Every);
});
