//! Hostile policy for the engine's tests: exports the decider interface of a
//! future contract version (0.2.0), which the host must refuse as unknown.

#[cfg(target_arch = "wasm32")]
mod glue {
    wit_bindgen::generate!({
        inline: "
            package openebs:msp-policy@0.2.0;
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
