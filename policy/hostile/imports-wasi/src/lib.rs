//! Hostile policy for the engine's tests: imports a WASI interface (the
//! environment) besides exporting a greeting; the host must refuse any import.

#[cfg(target_arch = "wasm32")]
mod glue {
    wit_bindgen::generate!({
        inline: "
            package acme:nosy@1.0.0;
            package wasi:cli@0.2.0 {
                interface environment {
                    get-environment: func() -> list<tuple<string, string>>;
                }
            }
            world nosy {
                import wasi:cli/environment@0.2.0;
                export peek: func() -> u32;
            }
        ",
        generate_all,
    });
    struct Nosy;
    impl Guest for Nosy {
        fn peek() -> u32 {
            wasi::cli::environment::get_environment().len() as u32
        }
    }
    export!(Nosy);
}
