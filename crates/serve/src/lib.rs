//! predict-buy serve
