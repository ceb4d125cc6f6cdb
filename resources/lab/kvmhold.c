/*
 * kvmhold: hold one idle KVM VM (with an in-kernel irqchip and one vCPU)
 * open for the life of the lab, so that starting and stopping the VMs under
 * test never flips KVM's static keys in the L1 kernel (preempt notifiers,
 * the APIC's software-disabled key, ...).
 *
 * Each flip patches kernel text while the other vCPU may run it; QEMU's
 * multi-threaded TCG sometimes misses such a patch and the L1 kernel oopses
 * on a stale int3 ("Oops: int3" in __schedule). With a VM always alive the
 * counts never return to zero, so nothing is patched after the first start.
 * Started in the background by the lab init; see docs/LAB.md.
 */
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <unistd.h>

int main(void)
{
	int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0) {
		perror("kvmhold: /dev/kvm");
		return 1;
	}
	int vm = ioctl(kvm, KVM_CREATE_VM, 0);
	if (vm < 0) {
		perror("kvmhold: KVM_CREATE_VM");
		return 1;
	}
	if (ioctl(vm, KVM_CREATE_IRQCHIP, 0) < 0)
		perror("kvmhold: KVM_CREATE_IRQCHIP");
	if (ioctl(vm, KVM_CREATE_VCPU, 0) < 0)
		perror("kvmhold: KVM_CREATE_VCPU");
	for (;;)
		pause();
}
