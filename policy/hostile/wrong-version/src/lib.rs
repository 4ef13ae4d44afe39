//! Hostile policy for the engine's tests: exports the decider interface of a
//! contract version the host does not run (1.0.0, another major), which it
//! must refuse as unknown, naming the versions it runs.

#[cfg(target_arch = "wasm32")]
mod glue {
    wit_bindgen::generate!({
        inline: "
            package openebs:msp-policy@1.0.0;
            interface decider {
                record policy-info { name: string, version: string }
                info: func() -> policy-info;
            }
            world policy { export decider; }
        ",
    });
    struct Future;
    impl exports::openebs::msp_policy::decider::Guest for Future {
        fn info() -> exports::openebs::msp_policy::decider::PolicyInfo {
            exports::openebs::msp_policy::decider::PolicyInfo {
                name: "future".into(),
                version: "2".into(),
            }
        }
    }
    export!(Future);
}
