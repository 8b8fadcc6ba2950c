//! Pod network and service proxy. Knows nothing of containers: only network
//! namespaces by path.
