//! Hostile policy for the engine's tests: the default policy, except that a
//! pool named `hostile-<what>` makes it misbehave. It passes the host's
//! conformance self-test (which never uses these names), so tests can load it
//! and then provoke each failure at decision time.

use msp_policy_sdk::model::{Decision, Observation, PolicyInfo};

pub fn info() -> PolicyInfo {
    PolicyInfo {
        name: "msp-hostile-misbehave".into(),
        version: "0.0.1".into(),
    }
}

/// What `hostile-hog` touches.
const HOG_BYTES: usize = 24 << 20;

#[inline(never)]
fn recurse(n: u64, acc: &mut [u64; 16]) -> u64 {
    acc[(n % 16) as usize] = n;
    if n == u64::MAX {
        return 0;
    }
    recurse(n + 1, acc) + acc[(n % 7) as usize]
}

pub fn decide(obs: &Observation) -> Decision {
    match obs.pool.name.as_str() {
        "hostile-loop" => {
            let mut i: u64 = 0;
            loop {
                i = std::hint::black_box(i.wrapping_add(1));
            }
        }
        "hostile-alloc" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        "hostile-recurse" => {
            let mut acc = [0u64; 16];
            let n = recurse(std::hint::black_box(0), &mut acc);
            msp_policy::decide::pending(format!("{n}"))
        }
        "hostile-panic" => panic!("hostile policy panics on purpose"),
        // Within every per-call limit, and heavy: it touches 24 MiB (one
        // write per page makes each resident) and burns past the inline
        // fuel, then decides as the default does. Many at once must not
        // take the operator past its memory limit (issue 23 item 10).
        // (Volatile accesses: `black_box` is no barrier on wasm, and the
        // optimiser would drop both the pages and the loop.)
        "hostile-hog" => {
            // Not zeroed by a loop (that alone would burn the fuel).
            let mut hog: Vec<u8> = Vec::with_capacity(HOG_BYTES);
            for page in (0..HOG_BYTES).step_by(4096) {
                // SAFETY: `page` is within `hog`'s allocation.
                unsafe { std::ptr::write_volatile(hog.as_mut_ptr().add(page), 1) };
            }
            let mut i: u64 = 0;
            // SAFETY: a local read and written in place.
            while unsafe { std::ptr::read_volatile(&i) } < 100_000 {
                unsafe { std::ptr::write_volatile(&mut i, i + 1) };
            }
            drop(hog);
            msp_policy::decide(obs)
        }
        "hostile-requeue" => Decision {
            requeue_after_ms: Some(u64::MAX),
            ..msp_policy::decide(obs)
        },
        "hostile-destroy" => Decision {
            action: msp_policy_sdk::model::Action::Destroy,
            ..msp_policy::decide(obs)
        },
        _ => msp_policy::decide(obs),
    }
}

#[cfg(target_arch = "wasm32")]
msp_policy_sdk::export_policy!(crate::info, crate::decide);
