//! One module per command.

pub mod data;
pub mod deploy;
pub mod drift;
pub mod evaluate;
pub mod model;
pub mod predict;
pub mod quickstart;
pub mod registry;
pub mod release;
pub mod render;
pub mod report;
pub mod reproduce;
pub mod serve;
pub mod shadow;
pub mod train;
