//! rvoip-tuning
