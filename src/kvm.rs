//! `/dev/kvm`: open it, check the API version and the capabilities ember
//! needs, and tell whether the host's KVM is PVM (no VMX/SVM) for
//! diagnostics.

use std::path::Path;

use kvm_ioctls::{Cap, Kvm};

/// Path of the KVM device.
pub const KVM_PATH: &str = "/dev/kvm";

/// Capabilities the VMM cannot run without.
const REQUIRED_CAPS: &[(Cap, &str)] = &[
    (Cap::Irqchip, "KVM_CAP_IRQCHIP"),
    (Cap::Irqfd, "KVM_CAP_IRQFD"),
    (Cap::Ioeventfd, "KVM_CAP_IOEVENTFD"),
    (Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
    (Cap::SetTssAddr, "KVM_CAP_SET_TSS_ADDR"),
    (Cap::ExtCpuid, "KVM_CAP_EXT_CPUID"),
    (Cap::ImmediateExit, "KVM_CAP_IMMEDIATE_EXIT"),
    (Cap::Pit2, "KVM_CAP_PIT2"),
];

/// Errors opening or checking `/dev/kvm`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The device node is missing.
    #[error("{path} does not exist: KVM is not available on this host (load kvm_intel, kvm_amd or kvm_pvm){hint}", path = .0, hint = flavour_hint())]
    Absent(String),
    /// Opening was refused.
    #[error("permission denied opening {path}: add the user to the kvm group or give the node mode 0666{hint}", path = .0, hint = flavour_hint())]
    PermissionDenied(String),
    /// Another open error (e.g. the path is not a KVM device).
    #[error("cannot use {path} as the KVM device{hint}", path = .0, hint = flavour_hint())]
    Open(String, #[source] kvm_ioctls::Error),
    /// Wrong KVM API version (or not a KVM device at all).
    #[error("{path} is not a usable KVM device: API version {version} (need 12)", path = .0, version = .1)]
    ApiVersion(String, i32),
    /// A required capability is missing.
    #[error("host KVM lacks {cap}{hint}", cap = .0, hint = flavour_hint())]
    MissingCap(&'static str),
}

/// Which KVM implementation backs `/dev/kvm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// Hardware virtualization (Intel VMX).
    Vmx,
    /// Hardware virtualization (AMD SVM).
    Svm,
    /// PVM: paravirtualized KVM without hardware support (`kvm_pvm`).
    Pvm,
    /// None of the modules above is loaded.
    Unknown,
}

impl std::fmt::Display for Flavour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Flavour::Vmx => "kvm_intel (VMX)",
            Flavour::Svm => "kvm_amd (SVM)",
            Flavour::Pvm => "kvm_pvm (PVM, no VMX/SVM: stock Linux guests cannot boot here)",
            Flavour::Unknown => "unknown (no kvm_intel, kvm_amd or kvm_pvm module)",
        })
    }
}

/// Detects the host KVM flavour from `/sys/module`.
pub fn flavour() -> Flavour {
    let loaded = |m: &str| Path::new("/sys/module").join(m).exists();
    if loaded("kvm_pvm") {
        Flavour::Pvm
    } else if loaded("kvm_intel") {
        Flavour::Vmx
    } else if loaded("kvm_amd") {
        Flavour::Svm
    } else {
        Flavour::Unknown
    }
}

fn flavour_hint() -> String {
    match flavour() {
        Flavour::Pvm => " (host KVM is PVM: kvm_pvm, no VMX/SVM)".to_string(),
        _ => String::new(),
    }
}

/// Opens the KVM device (normally [`KVM_PATH`]) and checks the API
/// version and required capabilities.
pub fn open(path: &Path) -> Result<Kvm, Error> {
    let display = path.display().to_string();
    let cpath = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| Error::Absent(display.clone()))?;
    let kvm = Kvm::new_with_path(&cpath).map_err(|e| match e.errno() {
        libc::ENOENT | libc::ENODEV | libc::ENXIO => Error::Absent(display.clone()),
        libc::EACCES | libc::EPERM => Error::PermissionDenied(display.clone()),
        _ => Error::Open(display.clone(), e),
    })?;
    let version = kvm.get_api_version();
    if version != kvm_bindings::KVM_API_VERSION as i32 {
        return Err(Error::ApiVersion(display, version));
    }
    for (cap, name) in REQUIRED_CAPS {
        if !kvm.check_extension(*cap) {
            return Err(Error::MissingCap(name));
        }
    }
    Ok(kvm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flavour_names() {
        assert!(Flavour::Pvm.to_string().contains("PVM"));
        assert!(Flavour::Vmx.to_string().contains("VMX"));
    }
}
