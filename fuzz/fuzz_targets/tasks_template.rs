//! The `{{ … }}` templates of task definitions and values files (names and Jinja2
//! expressions: credkeeper_tasks::template::{names, render}, definition::fill). Never
//! panics; a text without a `{{ … }}` renders to itself; with every name defined, nothing is
//! undefined (an expression may still fail, `{{ A * B }}` on strings, as in Jinja2).
#![no_main]

use credkeeper_tasks::definition;
use credkeeper_tasks::template::{self, FillError, Vars};
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
    assert!(!matches!(
        template::render(text, &Every),
        Err(FillError::Undefined(_))
    ));
    let mut slots = 0;
    let _ = template::substitute(text, |_| {
        slots += 1;
        Ok::<_, ()>(String::new())
    });
    if slots == 0 {
        assert_eq!(template::render(text, &Nothing), Ok(text.to_string()));
    }
    let _ = definition::fill(text, &Every);
});
