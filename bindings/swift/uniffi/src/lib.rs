//! UniFFI surface for Swift (in progress).
