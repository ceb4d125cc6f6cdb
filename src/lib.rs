//! ember: a KVM-based micro virtual machine monitor.
