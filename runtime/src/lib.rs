//! Pod sandboxes and containers: namespaces, process spawning, rootfs and mounts,
//! capabilities, seccomp, cgroups, logs and exec. Knows images only as a list of
//! read-only lower directories (see `images::Store::lower_dirs`).
