//! The networking.k8s.io group (`/apis/networking.k8s.io/v1`): ingresses, their classes,
//! network policies.

pub mod ingressclasses;
pub mod ingresses;
pub mod networkpolicies;
