//! `log` and `pow` for the whole binary, from the `libm` crate, so that the dynamic loader
//! does not map `libm.so.6` at every start (issue 13).
//!
//! These two are all the binary takes from the system's libm (SQLite's FTS5 ranking calls
//! `log`; minijinja's `**` and tokio's scheduler statistics call `pow`), yet loading the
//! library is an open, four mappings, its relocations and a few page faults in every
//! process, most of which run for a millisecond. Defined here, the linker resolves both
//! calls inside the binary and, linking `--as-needed`, leaves libm out of `DT_NEEDED`.
//! A library loaded later (MIT krb5 through `dlopen`) that wants libm loads it itself: the
//! binary does not export these symbols.

/// C's `log`: the natural logarithm (FreeBSD msun's, as ported by the `libm` crate).
#[unsafe(no_mangle)]
pub extern "C" fn log(x: f64) -> f64 {
    libm::log(x)
}

/// C's `pow`: `x` raised to `y` (FreeBSD msun's, as ported by the `libm` crate).
#[unsafe(no_mangle)]
pub extern "C" fn pow(x: f64, y: f64) -> f64 {
    libm::pow(x, y)
}

#[cfg(test)]
mod tests {
    use super::{log, pow};
    use std::f64::consts::{E, LN_2, LN_10, SQRT_2};

    #[test]
    fn log_and_pow_give_the_correctly_rounded_values_where_they_are_known() {
        assert_eq!(log(1.0), 0.0);
        assert_eq!(log(2.0), LN_2);
        assert_eq!(log(10.0), LN_10);
        assert_eq!(log(E), 1.0);
        assert_eq!(log(0.0), f64::NEG_INFINITY);
        assert!(log(-1.0).is_nan());
        assert_eq!(pow(2.0, 10.0), 1024.0);
        assert_eq!(pow(2.0, 0.5), SQRT_2);
        assert_eq!(pow(10.0, -3.0), 0.001);
        assert_eq!(pow(3.0, 0.0), 1.0);
        assert_eq!(pow(2.0, 1024.0), f64::INFINITY);
        assert!(pow(-8.0, 1.0 / 3.0).is_nan());
    }

    /// The distance between two doubles of one sign, in units in the last place.
    fn ulps(a: f64, b: f64) -> u64 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs()
    }

    #[test]
    fn log_and_pow_agree_with_the_system_libm_within_one_unit_in_the_last_place() {
        // SAFETY: libm.so.6 is the C library's own math library; loading it runs no
        // initialiser that could conflict with this process, and the two symbols have
        // the C signatures given.
        let (sys_log, sys_pow) = unsafe {
            let lib = Box::leak(Box::new(
                libloading::Library::new("libm.so.6").expect("the system's libm.so.6"),
            ));
            let l: libloading::Symbol<extern "C" fn(f64) -> f64> = lib.get(b"log\0").unwrap();
            let p: libloading::Symbol<extern "C" fn(f64, f64) -> f64> = lib.get(b"pow\0").unwrap();
            (*l, *p)
        };
        let mut x = 1e-12;
        while x < 1e12 {
            assert!(
                ulps(log(x), sys_log(x)) <= 1,
                "log({x}): {} vs {}",
                log(x),
                sys_log(x)
            );
            for y in [-7.5, -1.0, 0.25, 0.5, 3.0, 17.125] {
                let (ours, theirs) = (pow(x, y), sys_pow(x, y));
                assert!(ulps(ours, theirs) <= 1, "pow({x}, {y}): {ours} vs {theirs}");
            }
            x *= 1.37;
        }
    }
}
