//! `thaw bench`'s parts: timing one run, statistics, the report and its plot.

pub mod measure;
pub mod plot;
pub mod report;
pub mod stats;
