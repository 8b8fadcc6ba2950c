//! Which devices a container may use: runc's default rules (deny everything; allow the
//! default devices, the terminal ones, and `mknod` of any device without reading or
//! writing it), plus the devices given to the container explicitly. Without them a
//! container holding CAP_MKNOD (Docker's default set) could make `b 8 0` and read the
//! node's disk.
//!
//! Enforced through the container's cgroup: on v1 the `devices` controller
//! (`devices.deny` / `devices.allow`, Documentation/admin-guide/cgroup-v1/devices.rst); on
//! v2 a `BPF_PROG_TYPE_CGROUP_DEVICE` program attached to the cgroup (cgroup-v2.rst,
//! "Device controller"), built here from the same rules.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    Char,
    Block,
}

impl DeviceKind {
    fn letter(self) -> char {
        match self {
            DeviceKind::Char => 'c',
            DeviceKind::Block => 'b',
        }
    }
}

/// A device node a container is given (`podctl run --device`): made at `path` in its
/// `/dev` and allowed in its cgroup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    pub path: String,
    pub kind: DeviceKind,
    pub major: u32,
    pub minor: u32,
    /// What the container may do with it: a subset of `rwm`.
    pub access: String,
}

/// One allow rule: a device kind (`None`: both), major and minor (`None`: any), and the
/// access allowed (bits of [`READ`], [`WRITE`], [`MKNOD`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    pub kind: Option<DeviceKind>,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    pub access: u32,
}

/// The access bits, as the v2 program sees them (`BPF_DEVCG_ACC_*`, include/uapi/linux/bpf.h).
pub const MKNOD: u32 = 1;
pub const READ: u32 = 2;
pub const WRITE: u32 = 4;
const ALL: u32 = MKNOD | READ | WRITE;

fn access_bits(access: &str) -> io::Result<u32> {
    if access.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "device access: empty (r, w and m, or some of them)"));
    }
    access.chars().try_fold(0, |bits, c| match c {
        'r' => Ok(bits | READ),
        'w' => Ok(bits | WRITE),
        'm' => Ok(bits | MKNOD),
        _ => Err(io::Error::new(io::ErrorKind::InvalidInput, format!("device access {access:?}: only r, w and m"))),
    })
}

fn access_letters(bits: u32) -> String {
    [(READ, 'r'), (WRITE, 'w'), (MKNOD, 'm')].iter().filter(|(b, _)| bits & b != 0).map(|(_, c)| c).collect()
}

const fn char_device(major: u32, minor: Option<u32>) -> Rule {
    Rule { kind: Some(DeviceKind::Char), major: Some(major), minor, access: ALL }
}

/// runc's `AllowedDevices` (libcontainer/specconv), without tun/tap, which runc 1.2
/// dropped as well.
const DEFAULT_RULES: &[Rule] = &[
    Rule { kind: Some(DeviceKind::Char), major: None, minor: None, access: MKNOD },
    Rule { kind: Some(DeviceKind::Block), major: None, minor: None, access: MKNOD },
    char_device(1, Some(3)), // null
    char_device(1, Some(5)), // zero
    char_device(1, Some(7)), // full
    char_device(1, Some(8)), // random
    char_device(1, Some(9)), // urandom
    char_device(5, Some(0)), // tty
    char_device(5, Some(2)), // ptmx
    char_device(136, None),  // pts/*
];

/// The rules for a container: `None` (no restriction) when privileged, else the defaults
/// and its own devices.
pub fn rules(privileged: bool, devices: &[Device]) -> io::Result<Option<Vec<Rule>>> {
    if privileged {
        return Ok(None);
    }
    let mut rules = DEFAULT_RULES.to_vec();
    for device in devices {
        rules.push(Rule {
            kind: Some(device.kind),
            major: Some(device.major),
            minor: Some(device.minor),
            access: access_bits(&device.access)?,
        });
    }
    Ok(Some(rules))
}

/// v1: what to write, in order, to a new cgroup's `devices.deny` and `devices.allow`.
pub fn v1_writes(rules: &[Rule]) -> Vec<(&'static str, String)> {
    let number = |n: Option<u32>| n.map_or("*".to_string(), |n| n.to_string());
    let mut writes = vec![("devices.deny", "a".to_string())];
    for rule in rules {
        let kind = rule.kind.map_or('a', DeviceKind::letter);
        let line = format!("{kind} {}:{} {}", number(rule.major), number(rule.minor), access_letters(rule.access));
        writes.push(("devices.allow", line));
    }
    writes
}

/// One eBPF instruction (`struct bpf_insn`, include/uapi/linux/bpf.h).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Instruction {
    code: u8,
    /// dst_reg in the low four bits, src_reg in the high four.
    regs: u8,
    offset: i16,
    imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, offset: i16, imm: i32) -> Instruction {
    Instruction { code, regs: (src << 4) | dst, offset, imm }
}

// Opcodes (Documentation/bpf/standardization/instruction-set.rst).
const LDX_W: u8 = 0x61; // dst = *(u32 *)(src + offset)
const AND32_K: u8 = 0x54;
const RSH32_K: u8 = 0x74;
const MOV64_K: u8 = 0xb7;
const JNE_K: u8 = 0x55; // if dst != imm goto +offset
const JSET_K: u8 = 0x45; // if dst & imm goto +offset
const EXIT: u8 = 0x95;

/// v2: the device program for `rules`. It reads `struct bpf_cgroup_dev_ctx`
/// (`access_type` = access << 16 | type, `major`, `minor`) and returns 1 (allow) for the
/// first rule that covers the request, else 0 (deny), as runc's devicefilter does.
pub fn v2_program(rules: &[Rule]) -> Vec<Instruction> {
    let (r0, r1, r2, r3, r4, r5) = (0, 1, 2, 3, 4, 5);
    let mut program = vec![
        insn(LDX_W, r2, r1, 0, 0),
        insn(AND32_K, r2, 0, 0, 0xffff), // r2: type (BPF_DEVCG_DEV_BLOCK 1, _CHAR 2)
        insn(LDX_W, r3, r1, 0, 0),
        insn(RSH32_K, r3, 0, 0, 16), // r3: access
        insn(LDX_W, r4, r1, 4, 0),   // r4: major
        insn(LDX_W, r5, r1, 8, 0),   // r5: minor
    ];
    for rule in rules {
        let mut checks = Vec::new();
        if let Some(kind) = rule.kind {
            checks.push((JNE_K, r2, if kind == DeviceKind::Block { 1 } else { 2 }));
        }
        if rule.access & ALL != ALL {
            checks.push((JSET_K, r3, (!rule.access & ALL) as i32));
        }
        if let Some(major) = rule.major {
            checks.push((JNE_K, r4, major as i32));
        }
        if let Some(minor) = rule.minor {
            checks.push((JNE_K, r5, minor as i32));
        }
        // Each failed check jumps past the rest of this rule and its "allow".
        let count = checks.len();
        for (i, (code, register, imm)) in checks.into_iter().enumerate() {
            program.push(insn(code, register, 0, (count - i + 1) as i16, imm));
        }
        program.push(insn(MOV64_K, r0, 0, 0, 1));
        program.push(insn(EXIT, 0, 0, 0, 0));
    }
    program.push(insn(MOV64_K, r0, 0, 0, 0));
    program.push(insn(EXIT, 0, 0, 0, 0));
    program
}

/// Loads `program` and attaches it to the v2 cgroup at `dir` (bpf(2): BPF_PROG_LOAD, then
/// BPF_PROG_ATTACH with BPF_F_ALLOW_MULTI, as runc). The attachment holds the program: it
/// goes with the cgroup.
pub fn attach_v2(dir: &Path, program: &[Instruction]) -> io::Result<()> {
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_PROG_ATTACH: libc::c_long = 8;
    const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
    const BPF_CGROUP_DEVICE: u32 = 6;
    const BPF_F_ALLOW_MULTI: u32 = 2;
    #[repr(C)]
    #[derive(Default)]
    struct ProgLoad {
        prog_type: u32,
        insn_cnt: u32,
        insns: u64,
        license: u64,
        log_level: u32,
        log_size: u32,
        log_buf: u64,
        kern_version: u32,
        // Named so it is zero: the kernel reads the bytes after kern_version as flags.
        prog_flags: u32,
    }
    #[repr(C)]
    #[derive(Default)]
    struct ProgAttach {
        target_fd: u32,
        attach_bpf_fd: u32,
        attach_type: u32,
        attach_flags: u32,
    }
    let context = |what: &str, e: io::Error| io::Error::new(e.kind(), format!("{what} {}: {e}", dir.display()));
    let license = c"Apache-2.0";
    let load = |log: &mut [u8]| {
        let attr = ProgLoad {
            prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
            insn_cnt: program.len() as u32,
            insns: program.as_ptr() as u64,
            license: license.as_ptr() as u64,
            log_level: u32::from(!log.is_empty()),
            log_size: log.len() as u32,
            // No buffer without a log level: the kernel refuses one (EINVAL).
            log_buf: if log.is_empty() { 0 } else { log.as_mut_ptr() as u64 },
            ..Default::default()
        };
        // SAFETY: bpf(2) reads `attr` and the instructions, license and log buffer it
        // points to, all alive for the call.
        unsafe { libc::syscall(libc::SYS_bpf, BPF_PROG_LOAD, &attr as *const ProgLoad, size_of::<ProgLoad>()) }
    };
    // Without the verifier's log first: a log that outgrows its buffer fails a good
    // program (ENOSPC). Asked for only to say why a load failed.
    let mut fd = load(&mut []);
    if fd < 0 {
        let mut log = vec![0u8; 64 << 10];
        fd = load(&mut log);
        if fd < 0 {
            let e = io::Error::last_os_error();
            let verifier =
                String::from_utf8_lossy(&log[..log.iter().position(|b| *b == 0).unwrap_or(0)]).trim().to_string();
            let e = if verifier.is_empty() { e } else { io::Error::new(e.kind(), format!("{e}: {verifier}")) };
            return Err(context("load the device program for", e));
        }
    }
    // SAFETY: the kernel just returned this descriptor.
    let prog = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let cgroup = std::fs::File::open(dir).map_err(|e| context("open cgroup", e))?;
    let attach = ProgAttach {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
    };
    // SAFETY: bpf(2) reads `attach`, alive for the call.
    let attached =
        unsafe { libc::syscall(libc::SYS_bpf, BPF_PROG_ATTACH, &attach as *const ProgAttach, size_of::<ProgAttach>()) };
    if attached < 0 {
        return Err(context("attach the device program to", io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The v2 program run on a request, as the kernel would: a tiny interpreter of the
    /// few instructions `v2_program` emits.
    fn run(program: &[Instruction], kind: DeviceKind, access: u32, major: u32, minor: u32) -> u64 {
        let ctx = [(access << 16) | if kind == DeviceKind::Block { 1 } else { 2 }, major, minor];
        let mut regs = [0u64; 11];
        let mut pc = 0;
        loop {
            let i = program[pc];
            let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
            assert_eq!(src.max(1), 1, "only r1 is read from");
            let imm = i.imm as u32 as u64;
            pc += 1;
            match i.code {
                LDX_W => regs[dst] = ctx[i.offset as usize / 4] as u64,
                AND32_K => regs[dst] &= imm,
                RSH32_K => regs[dst] >>= imm,
                MOV64_K => regs[dst] = imm,
                JNE_K if regs[dst] != imm => pc += i.offset as usize,
                JSET_K if regs[dst] & imm != 0 => pc += i.offset as usize,
                JNE_K | JSET_K => {}
                EXIT => return regs[0],
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
    }

    #[test]
    fn default_rules_allow_the_default_devices_and_only_mknod_of_others() {
        let rules = rules(false, &[]).unwrap().unwrap();
        let program = v2_program(&rules);
        let allowed = |kind, access, major, minor| run(&program, kind, access, major, minor) == 1;
        use DeviceKind::*;
        for (major, minor) in [(1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 2), (136, 0), (136, 7)] {
            assert!(allowed(Char, READ | WRITE, major, minor), "c {major}:{minor}");
        }
        // The node's disk, loop devices, kmsg, kvm, fuse, tun, loop-control, tty1: no.
        for (kind, major, minor) in [
            (Block, 8, 0),
            (Block, 7, 0),
            (Char, 1, 11),
            (Char, 10, 232),
            (Char, 10, 229),
            (Char, 10, 200),
            (Char, 10, 237),
            (Char, 4, 1),
        ] {
            assert!(!allowed(kind, READ, major, minor), "{kind:?} {major}:{minor} read");
            assert!(!allowed(kind, WRITE, major, minor), "{kind:?} {major}:{minor} write");
            assert!(allowed(kind, MKNOD, major, minor), "{kind:?} {major}:{minor} mknod");
        }
        assert!(!allowed(Block, MKNOD | READ, 8, 0));
    }

    #[test]
    fn explicit_devices_and_privileged_containers() {
        let fuse =
            Device { path: "/dev/fuse".into(), kind: DeviceKind::Char, major: 10, minor: 229, access: "rw".into() };
        let rules = rules(false, &[fuse]).unwrap().unwrap();
        let program = v2_program(&rules);
        assert_eq!(run(&program, DeviceKind::Char, READ | WRITE, 10, 229), 1);
        assert_eq!(run(&program, DeviceKind::Block, READ, 10, 229), 0);
        assert_eq!(run(&program, DeviceKind::Char, READ, 10, 230), 0);
        assert!(super::rules(true, &[]).unwrap().is_none());
        let bad = Device { access: "rx".into(), ..rules_device() };
        assert!(super::rules(false, &[bad]).unwrap_err().to_string().contains("only r, w and m"));
    }

    fn rules_device() -> Device {
        Device { path: "/dev/x".into(), kind: DeviceKind::Block, major: 7, minor: 0, access: "r".into() }
    }

    #[test]
    fn v1_lines() {
        let writes = v1_writes(&rules(false, &[rules_device()]).unwrap().unwrap());
        assert_eq!(writes[0], ("devices.deny", "a".into()));
        let allowed: Vec<&str> = writes[1..].iter().map(|(_, line)| line.as_str()).collect();
        assert_eq!(allowed[..3], ["c *:* m", "b *:* m", "c 1:3 rwm"]);
        assert!(allowed.contains(&"c 136:* rwm"));
        assert_eq!(allowed.last(), Some(&"b 7:0 r"));
    }

    /// The program loads and, attached to a v2 cgroup of this machine (below our own),
    /// keeps a process in it from opening /dev/loop-control and /dev/kmsg while
    /// /dev/null still opens: the kernel's verdict, as root.
    #[test]
    fn the_kernel_enforces_the_v2_program() {
        assert!(nix::unistd::geteuid().is_root(), "this test needs root (as the whole suite)");
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let mount = mountinfo
            .lines()
            .find_map(|l| {
                let (left, right) = l.split_once(" - ")?;
                right.starts_with("cgroup2 ").then(|| left.split(' ').nth(4).unwrap().to_string())
            })
            .expect("a cgroup v2 tree");
        let own = own.lines().find_map(|l| l.strip_prefix("0::")).expect("own v2 cgroup");
        let dir =
            Path::new(&mount).join(own.trim_start_matches('/')).join(format!("podctl-devices-{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        let cgroup = crate::Cgroup { dirs: vec![(crate::cgroups::Controller::Unified, dir.clone())] };
        let result = (|| -> io::Result<nix::sys::wait::WaitStatus> {
            attach_v2(&dir, &v2_program(&rules(false, &[])?.expect("restricted")))?;
            // SAFETY: the child makes raw system calls only, then _exit.
            match unsafe { cgroup.fork_into(false) }? {
                crate::cgroups::Forked::Child(joined) => unsafe {
                    let open = |path: &std::ffi::CStr| {
                        let fd = libc::open(path.as_ptr(), libc::O_RDWR);
                        if fd >= 0 {
                            libc::close(fd);
                            0
                        } else {
                            *libc::__errno_location()
                        }
                    };
                    let ok = joined.is_ok()
                        && open(c"/dev/null") == 0
                        && open(c"/dev/loop-control") == libc::EPERM
                        && open(c"/dev/kmsg") == libc::EPERM;
                    libc::_exit(if ok { 0 } else { 1 })
                },
                crate::cgroups::Forked::Parent(child) => Ok(nix::sys::wait::waitpid(child, None)?),
            }
        })();
        cgroup.remove().unwrap();
        let status = result.unwrap();
        assert!(
            matches!(status, nix::sys::wait::WaitStatus::Exited(_, 0)),
            "device access not as expected: {status:?}"
        );
    }
}
