//! Request policy: path normalization (and, with enforcement, the feature map,
//! tenant resolution and the decision function).

pub mod path;
