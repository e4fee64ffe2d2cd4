//! predict-buy deploy
