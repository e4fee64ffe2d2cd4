//! predict-buy model
