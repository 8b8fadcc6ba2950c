//! The node agent's kubelet side. So far: turning a Pod into what the runtime runs.

pub mod spec;
