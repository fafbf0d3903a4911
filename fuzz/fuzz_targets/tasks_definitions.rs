//! credkeeper_tasks::definition::parse on any YAML text: a credkeeper `tasks` file or a
//! rucio-task-manager values file (`cronjobs`), what `load` reads from a path. Every task
//! of a file it accepts is then validated and rendered with every template name defined
//! (no secret volumes, so nothing is read from disk). Never panics.
#![no_main]

use credkeeper_tasks::definition::{self, Options};
use credkeeper_tasks::template::Vars;
use libfuzzer_sys::fuzz_target;

struct Every;
impl Vars for Every {
    fn get(&self, name: &str) -> Option<String> {
        Some(format!("value-of-{name}"))
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let options = Options {
        runner: vec!["rucio-task-manager".into()],
        ..Options::default()
    };
    let Ok(tasks) = definition::parse("fuzz.yaml", text, &options) else {
        return;
    };
    let _ = definition::validate(&tasks, &Every, &options);
    for task in &tasks {
        let _ = task.render(&Every, &options);
        let _ = task.schedule.describe();
    }
});
