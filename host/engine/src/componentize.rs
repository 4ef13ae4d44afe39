//! Turns the core module a policy crate builds for wasm32-unknown-unknown
//! into the component the host loads. The SDK's bindings leave the contract
//! in a custom section of the core module; the encoder reads it from there,
//! so an author needs no tool beyond the operator binary.

use crate::error::PolicyError;

/// The component for core module `core` (validated as it is encoded).
pub fn componentize(core: &[u8]) -> Result<Vec<u8>, PolicyError> {
    // The host's own header check: a pass means it is a component already.
    if crate::sandbox::check_header(core).is_ok() {
        return Err(PolicyError::Garbage(
            "already a component: nothing to wrap".into(),
        ));
    }
    wit_component::ComponentEncoder::default()
        .validate(true)
        .module(core)
        .and_then(|mut e| e.encode())
        .map_err(|e| PolicyError::Garbage(format!("cannot make a component of it: {e:#}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_component_or_garbage_is_refused_with_a_reason() {
        let component = crate::bundled::DEFAULT_COMPONENT;
        let err = componentize(component).expect_err("a component is not wrapped again");
        assert!(err.to_string().contains("already a component"), "{err}");
        // A module without the contract wraps into a component that exports
        // nothing, which the host's check then refuses.
        let empty = componentize(b"\0asm\x01\0\0\0").expect("an empty component");
        let limits = crate::Limits::default();
        let err = crate::check(&empty, crate::PolicySource::File, &limits).expect_err("no decider");
        assert_eq!(err.kind(), "wrong-world", "{err}");
        let err = componentize(b"\0asm\x01\0\0\0\xff").expect_err("a broken module");
        assert!(err.to_string().contains("cannot make a component"), "{err}");
    }
}
