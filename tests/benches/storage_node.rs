//! Times CreatePool, ImportPool (create-or-import after a restart) and
//! ListPools against the real storage node on a loop device. Prints numbers;
//! asserts nothing about them.

fn main() {
    eprintln!("storage_node bench: not written yet");
}
