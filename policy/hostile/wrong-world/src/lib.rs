//! Hostile policy for the engine's tests: a component of another world
//! altogether (no decider interface), which the host must refuse.

#[cfg(target_arch = "wasm32")]
mod glue {
    wit_bindgen::generate!({
        inline: "
            package acme:greeter@1.0.0;
            world greeter { export hello: func() -> string; }
        ",
    });
    struct Greeter;
    impl Guest for Greeter {
        fn hello() -> String {
            "hello".into()
        }
    }
    export!(Greeter);
}
