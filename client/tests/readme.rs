//! README's Rust example is `examples/readme.rs` (which `cargo test` compiles), word for word,
//! with every crate it uses in README's `[dependencies]`; and the client's error goes into
//! `Box<dyn Error>` and `anyhow::Error` with `?`.

const README: &str = include_str!("../../README.md");
const EXAMPLE: &str = include_str!("../examples/readme.rs");

/// The body of the first fenced block opened by `fence` in README's Rust client section.
fn block(fence: &str) -> String {
    let start = README
        .find("## The Rust client library")
        .expect("the Rust client section");
    let section = &README[start..];
    let open = section
        .find(&format!("\n{fence}\n"))
        .unwrap_or_else(|| panic!("a {fence} block"));
    let body = &section[open + fence.len() + 2..];
    let close = body.find("\n```\n").expect("the block's end");
    format!("{}\n", &body[..close])
}

#[test]
fn readme_rust_example_is_the_compiled_example() {
    assert_eq!(
        block("```rust"),
        EXAMPLE,
        "README's Rust example and client/examples/readme.rs differ"
    );
}

#[test]
fn readme_dependencies_cover_what_the_example_uses() {
    let toml = block("```toml");
    assert!(toml.starts_with("[dependencies]\n"), "{toml}");
    for krate in ["cairn-client", "serde_json", "tokio", "tokio-stream"] {
        assert!(
            toml.lines().any(|l| l.starts_with(&format!("{krate} ="))),
            "README's [dependencies] lacks {krate}: {toml}"
        );
    }
    assert!(toml.contains("\"macros\"") && toml.contains("\"rt-multi-thread\""));
    // Every crate the example names is listed.
    for used in [
        "cairn_client::",
        "serde_json::",
        "tokio::",
        "tokio_stream::",
    ] {
        assert!(EXAMPLE.contains(used), "{used}");
    }
}

fn fails() -> Result<(), cairn_client::Error> {
    Err(cairn_client::Error::Unavailable("no node answered".into()))
}

fn boxed() -> Result<(), Box<dyn std::error::Error>> {
    fails()?;
    Ok(())
}

fn boxed_send_sync() -> Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
    fails()?;
    Ok(())
}

fn with_anyhow() -> anyhow::Result<()> {
    fails()?;
    Ok(())
}

#[test]
fn client_errors_go_into_box_dyn_error_and_anyhow_with_the_question_mark() {
    fn is_error<E: std::error::Error + Send + Sync + 'static>() {}
    is_error::<cairn_client::Error>();
    assert!(boxed()
        .unwrap_err()
        .to_string()
        .contains("no node answered"));
    assert!(boxed_send_sync().is_err());
    let error = with_anyhow().unwrap_err();
    assert!(error.downcast_ref::<cairn_client::Error>().is_some());
}
