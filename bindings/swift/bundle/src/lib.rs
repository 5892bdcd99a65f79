//! One static library for Swift: the C ABI and the UniFFI surface together (in progress).
