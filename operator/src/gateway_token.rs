//! placeholder
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("x")]
    X,
}
