//! predict-buy registry
