/*
 * ember boot-timer tiny guest (GNU as): the smallest guest that measures a
 * VMM's own cost. PVH entry only (32-bit protected mode, paging off), so
 * ember, Firecracker, Cloud Hypervisor and QEMU microvm all boot it:
 *
 *   1. writes "ember-tiny: boot timer" and a newline on COM1 (0x3f8);
 *   2. writes 123 to the boot timer (MMIO 0xc0000000; Firecracker's too);
 *   3. stops: 0x34 to port 0x600 (the ACPI S5 power-off of ember and
 *      Cloud Hypervisor; a no-op elsewhere), 0xfe to port 0x64 (i8042
 *      reset: Firecracker), then a triple fault (an empty IDT and a #GP:
 *      QEMU microvm, which has no i8042).
 *
 * Build: resources/tiny-guest/build.sh (as + ld; the ELF is a few hundred
 * bytes).
 */
        .set COM1, 0x3f8

        .text
        .code32
        .globl _start
_start:
        mov     $msg, %esi
        mov     $COM1, %dx
1:      lodsb
        test    %al, %al
        jz      2f
        outb    %al, %dx
        jmp     1b
2:      movb    $123, 0xc0000000        /* boot timer: init reached */
        mov     $0x34, %al              /* ACPI sleep control: SLP_TYP=5 | SLP_EN */
        mov     $0x600, %dx
        outb    %al, %dx
        mov     $0xfe, %al              /* i8042: pulse the reset line */
        outb    %al, $0x64
        lidt    empty_idt               /* no IDT: the next fault triple-faults */
        mov     $0x1234, %ax
        mov     %ax, %ds                /* #GP: selector beyond the GDT */
3:      hlt
        jmp     3b

        .balign 8
empty_idt:
        .word   0
        .long   0
msg:    .asciz  "ember-tiny: boot timer\n"

        .section .note.Xen, "a", @note
        .balign 4
        .long   4                       /* namesz: "Xen\0" */
        .long   4                       /* descsz */
        .long   18                      /* XEN_ELFNOTE_PHYS32_ENTRY */
        .asciz  "Xen"
        .balign 4
        .long   _start
        .balign 4
