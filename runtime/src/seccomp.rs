//! The seccomp filter of a non-privileged container: the system calls Docker's and
//! containerd's default profile (what Kubernetes calls `RuntimeDefault`) keeps from
//! containers without CAP_SYS_ADMIN, refused with EPERM; `clone3` answers ENOSYS so that
//! libc falls back to `clone`, whose namespace flags can be checked (seccomp cannot read
//! clone3's struct). See docs.docker.com/engine/security/seccomp ("Significant syscalls
//! blocked by the default profile") and moby's `profiles/seccomp/default.json`.
//!
//! On x86_64 the x32 ABI reaches the same kernel entry points under other numbers
//! (`__X32_SYSCALL_BIT` set) with the same audit architecture, so a list of refused numbers
//! would let every refused call through under its x32 number: those are refused first,
//! all of them (EPERM), as libseccomp does for an architecture its profile does not name.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
};

/// Refused outright (EPERM).
const REFUSED: &[libc::c_long] = &[
    libc::SYS_acct,
    libc::SYS_add_key,
    libc::SYS_bpf,
    libc::SYS_clock_adjtime,
    libc::SYS_clock_settime,
    libc::SYS_delete_module,
    libc::SYS_finit_module,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fsopen,
    libc::SYS_fspick,
    libc::SYS_get_mempolicy,
    libc::SYS_init_module,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_io_uring_setup,
    libc::SYS_kcmp,
    libc::SYS_kexec_file_load,
    libc::SYS_kexec_load,
    libc::SYS_keyctl,
    libc::SYS_lookup_dcookie,
    libc::SYS_mbind,
    libc::SYS_mount,
    libc::SYS_mount_setattr,
    libc::SYS_move_mount,
    libc::SYS_move_pages,
    libc::SYS_name_to_handle_at,
    libc::SYS_open_by_handle_at,
    libc::SYS_open_tree,
    libc::SYS_perf_event_open,
    libc::SYS_pivot_root,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_ptrace,
    libc::SYS_quotactl,
    libc::SYS_reboot,
    libc::SYS_request_key,
    libc::SYS_set_mempolicy,
    libc::SYS_setns,
    libc::SYS_settimeofday,
    libc::SYS_swapoff,
    libc::SYS_swapon,
    libc::SYS_umount2,
    libc::SYS_unshare,
    libc::SYS_userfaultfd,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_ioperm,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_iopl,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_nfsservctl,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_sysfs,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_uselib,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_ustat,
];

/// `clone` flags that make namespaces: refused, as without CAP_SYS_ADMIN.
const NAMESPACE_FLAGS: &[libc::c_int] = &[
    libc::CLONE_NEWNS,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
    libc::CLONE_NEWCGROUP,
];

/// The x32 system calls' bit (arch/x86/include/uapi/asm/unistd.h).
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// EPERM for every x32 system call; everything else goes on to the next filter.
#[cfg(target_arch = "x86_64")]
fn refuse_x32() -> BpfProgram {
    use seccompiler::sock_filter;
    // classic BPF (linux/filter.h): ld [nr]; jge X32_SYSCALL_BIT ? errno : allow
    const LD_W_ABS: u16 = 0x20;
    const JGE_K: u16 = 0x35;
    const RET_K: u16 = 0x06;
    const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
    const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
    // struct seccomp_data: nr at offset 0 (the architecture is checked by the next filter).
    vec![
        sock_filter { code: LD_W_ABS, jt: 0, jf: 0, k: 0 },
        sock_filter { code: JGE_K, jt: 0, jf: 1, k: X32_SYSCALL_BIT },
        sock_filter { code: RET_K, jt: 0, jf: 0, k: SECCOMP_RET_ERRNO | libc::EPERM as u32 },
        sock_filter { code: RET_K, jt: 0, jf: 0, k: SECCOMP_RET_ALLOW },
    ]
}

/// The filters to install, in order: EPERM for the x32 ABI (x86_64), ENOSYS for clone3,
/// then EPERM for the rest.
pub fn runtime_default() -> Result<Vec<BpfProgram>, seccompiler::Error> {
    let arch = std::env::consts::ARCH.try_into()?;
    let clone3 = SeccompFilter::new(
        BTreeMap::from([(libc::SYS_clone3, vec![])]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )?;
    let mut refused: BTreeMap<i64, Vec<SeccompRule>> = REFUSED.iter().map(|nr| (*nr, vec![])).collect();
    // clone's flags are its first argument on x86_64 and aarch64 alike.
    let namespace_rules = NAMESPACE_FLAGS
        .iter()
        .map(|flag| {
            let flag = *flag as u64;
            SeccompRule::new(vec![SeccompCondition::new(
                0,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(flag),
                flag,
            )?])
        })
        .collect::<Result<Vec<_>, _>>()?;
    refused.insert(libc::SYS_clone, namespace_rules);
    let refused = SeccompFilter::new(refused, SeccompAction::Allow, SeccompAction::Errno(libc::EPERM as u32), arch)?;
    let mut filters = vec![clone3.try_into()?, refused.try_into()?];
    #[cfg(target_arch = "x86_64")]
    filters.insert(0, refuse_x32());
    Ok(filters)
}

/// Installs the filters on the calling thread (which must have no_new_privs set or
/// CAP_SYS_ADMIN, seccomp(2)).
pub fn apply(filters: &[BpfProgram]) -> Result<(), seccompiler::Error> {
    filters.iter().try_for_each(|f| seccompiler::apply_filter(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_for_this_architecture() {
        let filters = runtime_default().unwrap();
        assert_eq!(filters.len(), if cfg!(target_arch = "x86_64") { 3 } else { 2 });
        assert!(filters.iter().all(|f| !f.is_empty()));
    }

    /// In a child with the filters on: an x32 system call is refused by them (EPERM), not
    /// left to the kernel (which answers ENOSYS without x32 support, or runs it); the
    /// x86_64 numbers of what stays allowed still run. As root, the way a container gets
    /// them; the child makes raw system calls only (the test harness has threads).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn x32_system_calls_are_refused() {
        let filters = runtime_default().unwrap();
        // SAFETY: the child makes raw system calls only, then _exit.
        match unsafe { libc::fork() } {
            0 => unsafe {
                let ok = apply(&filters).is_ok()
                    && libc::syscall(X32_SYSCALL_BIT as libc::c_long | libc::SYS_getpid) == -1
                    && *libc::__errno_location() == libc::EPERM
                    && libc::syscall(X32_SYSCALL_BIT as libc::c_long | libc::SYS_unshare, 0) == -1
                    && *libc::__errno_location() == libc::EPERM
                    && libc::syscall(libc::SYS_getpid) > 0;
                libc::_exit(if ok { 0 } else { 1 })
            },
            child => {
                let mut status = 0;
                // SAFETY: waiting for our own child.
                unsafe { libc::waitpid(child, &mut status, 0) };
                assert!(
                    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                    "x32 calls not refused: {status:#x}"
                );
            }
        }
    }
}
