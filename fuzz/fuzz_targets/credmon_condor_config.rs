//! credkeeper_credmon::condor_config::CondorConfig::parse on any text (an HTCondor config
//! file, as CONDOR_CONFIG names it), then the credmon's Settings::from_config on what it
//! read: neither panics.
#![no_main]

use credkeeper_credmon::condor_config::CondorConfig;
use credkeeper_credmon::settings::Settings;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut config = CondorConfig::default();
    if config.parse("fuzz.config", text).is_err() {
        return;
    }
    let _ = config.get_bool("CREDMON_OAUTH", false);
    let _ = config.get_i64("CREDMON_OAUTH_SCAN_INTERVAL");
    let _ = Settings::from_config(config, Some("/nonexistent/credd".into()));
});
