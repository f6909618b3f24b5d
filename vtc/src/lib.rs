//! VTC language (placeholder).
