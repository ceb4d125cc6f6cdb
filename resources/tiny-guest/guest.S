/*
 * ember tiny test guest (GNU as, AT&T syntax), assembled and linked by the
 * tests in tests/tiny_guest.rs:
 *
 *   as --64 --defsym MODE=<n> [--defsym PVH=1] guest.S -o guest.o
 *   ld -m elf_x86_64 -N -Ttext=0x100000 -e _start guest.o -o guest.elf
 *
 * For a bzImage the tests link at 0x100200 (the 64-bit entry is 0x200
 * past the protected-mode kernel), `objcopy -O binary` the result and
 * prepend a setup header (see tests/common/mod.rs `tiny_bzimage`).
 *
 * _start is the 64-bit entry (Linux 64-bit boot protocol: long mode,
 * rsi = zero page). With PVH=1 the ELF also has a XEN_ELFNOTE_PHYS32_ENTRY
 * note for pvh_start (32-bit protected mode, paging off, ebx = start info).
 *
 * MODE selects what the 64-bit entry does after checking the zero page:
 *   0 hello: print the zero page magic and the command line, then reset
 *   1 triple fault: print a line, then touch unmapped memory (no IDT)
 *   2 mmio: read 4 bytes from 0xd0000000 (no device), print them in hex
 *   3 echo: copy COM1 input to output until '.', then reset
 *   4 cpus: count processor entries in the MP table, print, reset
 *   5 int3: an instruction PVM's CPL0 emulator rejects
 *   6 exit status: print a line, write 42 to the exit-status port 0xf4
 *   7 panic: print a Linux-style "Kernel panic" line, then reset
 *   8 booted: write the "booted" port 0xf5, then spin forever
 *   9 acpi power-off: print the zero page's acpi_rsdp_addr and whether
 *     "RSD PTR " is there, then write SLP_TYP=5|SLP_EN (0x34) to the ACPI
 *     sleep control port 0x600 (the VM must stop; the guest spins if not)
 *  10 acpi reset: write the reset value 1 to the ACPI reset port 0x602
 *  11 file page: print the first word of a page-aligned 4 KiB page of
 *     read-only data (PAGE_WORD, default 0x11111111), wait for one byte
 *     on COM1, print the word again, reset. Linked with page-aligned
 *     segments (not -N) it is a kernel whose pages ember maps from the
 *     file (tests/kernel_file_lease.rs).
 *  12 stray pic: a guest that, like Linux on hardware-reduced ACPI, never
 *     programs the 8259 PIC: loads an IDT catching vectors 0-31, enables
 *     its local APIC, asks COM1 for a transmit interrupt (IRQ 4) and
 *     enables interrupts with the IOAPIC pin masked. It prints the first
 *     vector that arrives ("interrupt vector N") or "no interrupt", then
 *     resets. The VMM must leave the PIC masked: an unprogrammed PIC would
 *     deliver IRQ 4 through LINT0 as vector 4, an exception vector.
 *  13 count: print "counting", count rbx from 0 to COUNT (default
 *     400000: about 0.7 s on PVM, which emulates CPL0 code at ~0.5 us an
 *     instruction) in a three-instruction loop whose rip stays in
 *     [count_loop, count_done) (global symbols), print "counted N", reset.
 *     A paused vCPU must show rbx and rip standing still.
 *  14 hostile virtio-block rings: set up the disk in slot 0 (VERSION_1
 *     only, no EVENT_IDX), queue 0 of size 8 with its available ring at A
 *     (A = 2 mod 4) and its used ring at A + 2, so that avail.idx is
 *     used.flags (and avail.ring[0] is used.idx). Descriptor 0 is a lone
 *     1-byte device-writable status byte (a malformed request, answered
 *     with IOERR); avail.ring[0] = 0, avail.idx = 1, notify, print
 *     "hostile queue posted", then cli; hlt forever. A device that
 *     disables notifications (used.flags = 1, so avail.idx = 1) and
 *     re-enables them (0) before checking avail.idx against its next
 *     index (1) finds new work forever; it starts at the DRIVER_OK kick.
 *  15 serial flood: print "flooding", then the same line on COM1 forever.
 *  16 virtio-console flood (--console virtio, no disks: slot 0): print
 *     "console flooding" on COM1, set up the console (VERSION_1 only),
 *     the receiveq (queue 0, size 8) with an empty ring and the transmitq
 *     (queue 1, size 8), then forever: make descriptor 0 (4 KiB of text,
 *     device-readable) available, notify queue 1, spin until used.idx
 *     catches up (one buffer out at a time).
 *  17 slow flush + heartbeat: two disks, vda (slot 0) and vdb (slot 1),
 *     set up as in 14 with normal rings. Poll, without interrupts, keeping
 *     one FLUSH outstanding on vda (resubmitted when it completes) and one
 *     4 KiB read of sector 0 on vdb, printing "vdb read N" for each read
 *     completed, and "tick N" every TICK_CYCLES of TSC (default 300000000,
 *     100 ms at 3 GHz; below 2^31; the test passes the host's TSC rate /
 *     10: KVM guests see the host's TSC rate). A request whose status byte
 *     is not 0 prints "vda flush status S" / "vdb read status S" and
 *     resets. A stalled vCPU shows as a gap between ticks.
 *  Modes 14, 16 and 17 print "no such virtio device" or "virtio setup
 *  failed, status 0x..." and reset if the device setup does not stick.
 *
 * Only plain integer instructions: PVM emulates guest CPL0 code.
 */
        .set COM1, 0x3f8
        .set COM1_LSR, 0x3fd
        .set I8042_CMD, 0x64
        .set EXIT_STATUS, 0xf4
        .set ACPI_SLEEP_CONTROL, 0x600
        .set ACPI_RESET, 0x602
        .set VIRTIO_MMIO_BASE, 0xd0000000      /* slot i at + i * STRIDE */
        .set VIRTIO_MMIO_STRIDE, 0x1000
        .set VIRTIO_MMIO_MAGIC, 0x74726976     /* "virt" */
        /* virtio-mmio registers (virtio 1.2 §4.2.2) */
        .set VIRTIO_MMIO_MAGIC_VALUE, 0x000
        .set VIRTIO_MMIO_VERSION, 0x004
        .set VIRTIO_MMIO_DEVICE_ID, 0x008
        .set VIRTIO_MMIO_DEVICE_FEATURES, 0x010
        .set VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0x014
        .set VIRTIO_MMIO_DRIVER_FEATURES, 0x020
        .set VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0x024
        .set VIRTIO_MMIO_QUEUE_SEL, 0x030
        .set VIRTIO_MMIO_QUEUE_NUM_MAX, 0x034
        .set VIRTIO_MMIO_QUEUE_NUM, 0x038
        .set VIRTIO_MMIO_QUEUE_READY, 0x044
        .set VIRTIO_MMIO_QUEUE_NOTIFY, 0x050
        .set VIRTIO_MMIO_STATUS, 0x070
        .set VIRTIO_MMIO_QUEUE_DESC_LOW, 0x080
        .set VIRTIO_MMIO_QUEUE_DESC_HIGH, 0x084
        .set VIRTIO_MMIO_QUEUE_AVAIL_LOW, 0x090
        .set VIRTIO_MMIO_QUEUE_AVAIL_HIGH, 0x094
        .set VIRTIO_MMIO_QUEUE_USED_LOW, 0x0a0
        .set VIRTIO_MMIO_QUEUE_USED_HIGH, 0x0a4
        /* device status bits (§2.1) */
        .set VIRTIO_S_ACKNOWLEDGE, 1
        .set VIRTIO_S_DRIVER, 2
        .set VIRTIO_S_DRIVER_OK, 4
        .set VIRTIO_S_FEATURES_OK, 8
        .set VIRTIO_ID_BLOCK, 2
        .set VIRTIO_ID_CONSOLE, 3
        .set VRING_DESC_F_NEXT, 1
        .set VRING_DESC_F_WRITE, 2
        .set VIRTIO_BLK_T_IN, 0
        .set VIRTIO_BLK_T_FLUSH, 4
.ifndef COUNT
        .set COUNT, 400000
.endif
.ifndef TICK_CYCLES
        .set TICK_CYCLES, 300000000             /* 100 ms at 3 GHz */
.endif

        .text
        .code64
        .globl _start
_start:
        mov     %rsi, %r12              /* zero page */
        cmpl    $0x53726448, 0x202(%r12) /* "HdrS" */
        jne     bad_zero_page

.if MODE == 0
        lea     msg_linux64(%rip), %rdi
        call    puts
        mov     0x228(%r12), %edi       /* hdr.cmd_line_ptr */
        call    puts
        lea     msg_e820(%rip), %rdi
        call    puts
        movzbl  0x1e8(%r12), %edi       /* e820_entries */
        call    putdec
        lea     msg_initrd(%rip), %rdi
        call    puts
        mov     0x218(%r12), %edi       /* hdr.ramdisk_image */
        call    puthex32
        lea     msg_initrd_size(%rip), %rdi
        call    puts
        mov     0x21c(%r12), %edi       /* hdr.ramdisk_size */
        call    puthex32
        lea     msg_nl(%rip), %rdi
        call    puts
        jmp     reset
.endif

.if MODE == 1
        lea     msg_tf(%rip), %rdi
        call    puts
        movabs  $0x4000000000, %rax     /* not mapped by the boot page tables */
        mov     (%rax), %rax            /* #PF -> no IDT -> triple fault */
        lea     msg_survived(%rip), %rdi
        call    puts
        jmp     reset
.endif

.if MODE == 2
        mov     $0xd0000000, %eax
        mov     (%rax), %edi            /* MMIO read, nothing there */
        mov     %edi, %r13d
        lea     msg_mmio(%rip), %rdi
        call    puts
        mov     %r13d, %edi
        call    puthex32
        lea     msg_nl(%rip), %rdi
        call    puts
        jmp     reset
.endif

.if MODE == 3
        lea     msg_echo(%rip), %rdi
        call    puts
        mov     $0, %r13d               /* bytes echoed */
1:      call    getc
        cmp     $'.', %al
        je      2f
        outb    %al, %dx
        inc     %r13d
        jmp     1b
2:      lea     msg_echo_done(%rip), %rdi
        mov     %r13d, %esi
        call    say_dec
        jmp     reset
.endif

.if MODE == 4
        mov     $0xf0000, %esi
        cmpl    $0x5f504d5f, (%rsi)     /* "_MP_" */
        jne     bad_mp
        mov     4(%rsi), %esi           /* configuration table */
        cmpl    $0x504d4350, (%rsi)     /* "PCMP" */
        jne     bad_mp
        movzwl  34(%rsi), %ecx          /* entry count */
        lea     44(%rsi), %rsi
        xor     %edi, %edi              /* processors */
1:      test    %ecx, %ecx
        jz      3f
        cmpb    $0, (%rsi)
        jne     2f
        inc     %edi
        add     $20, %rsi
        dec     %ecx
        jmp     1b
2:      add     $8, %rsi
        dec     %ecx
        jmp     1b
3:      mov     %edi, %esi
        lea     msg_cpus(%rip), %rdi
        call    say_dec
        jmp     reset
bad_mp:
        lea     msg_bad_mp(%rip), %rdi
        call    puts
        jmp     reset
.endif

.if MODE == 5
        lea     msg_int3(%rip), %rdi
        call    puts
        int3                            /* PVM: emulation failure; VMX/SVM: no IDT -> triple fault */
        jmp     reset
.endif

.if MODE == 6
        lea     msg_exit(%rip), %rdi
        call    puts
        mov     $42, %al
        outb    %al, $EXIT_STATUS
        lea     msg_survived(%rip), %rdi
        call    puts
        jmp     reset
.endif

.if MODE == 7
        lea     msg_panic(%rip), %rdi
        call    puts
        jmp     reset
.endif

.if MODE == 8
        mov     $0, %al
        outb    %al, $(EXIT_STATUS + 1)
1:      jmp     1b
.endif

.if MODE == 9
        lea     msg_rsdp(%rip), %rdi
        call    puts
        mov     0x70(%r12), %rsi        /* boot_params.acpi_rsdp_addr */
        mov     %esi, %edi
        call    puthex32
        mov     0x70(%r12), %rsi
        test    %rsi, %rsi
        jz      1f
        movabs  $0x2052545020445352, %rax /* "RSD PTR " */
        cmp     %rax, (%rsi)
        jne     1f
        lea     msg_rsdp_ok(%rip), %rdi
        call    puts
1:      lea     msg_nl(%rip), %rdi
        call    puts
        mov     $0x34, %al              /* SLP_TYP 5 << 2 | SLP_EN */
        mov     $ACPI_SLEEP_CONTROL, %dx
        outb    %al, %dx
        lea     msg_survived(%rip), %rdi
        call    puts
2:      jmp     2b
.endif

.if MODE == 10
        lea     msg_acpi_reset(%rip), %rdi
        call    puts
        mov     $1, %al
        mov     $ACPI_RESET, %dx
        outb    %al, %dx
        lea     msg_survived(%rip), %rdi
        call    puts
1:      jmp     1b
.endif

.if MODE == 11
        lea     msg_page(%rip), %rdi
        mov     file_page(%rip), %esi
        call    say_hex
        call    getc
        lea     msg_page(%rip), %rdi
        mov     file_page(%rip), %esi
        call    say_hex
        jmp     reset

        .section .rodata
        .balign 4096
file_page:
.ifdef PAGE_WORD
        .long   PAGE_WORD
.else
        .long   0x11111111
.endif
        .fill   4092, 1, 0x5a
        .text
.endif

.if MODE == 12
        /* 32 gates, 16 bytes each: interrupt gate, present, DPL 0. */
        lea     idt(%rip), %rdi
        lea     vector_stubs(%rip), %rsi
        mov     %cs, %ax
        mov     $32, %ecx
1:      mov     %rsi, %rdx
        mov     %dx, (%rdi)             /* offset 15:0 */
        mov     %ax, 2(%rdi)            /* selector */
        movw    $0x8e00, 4(%rdi)        /* type: 64-bit interrupt gate */
        shr     $16, %rdx
        mov     %dx, 6(%rdi)            /* offset 31:16 */
        shr     $16, %rdx
        mov     %edx, 8(%rdi)           /* offset 63:32 */
        movl    $0, 12(%rdi)
        add     $16, %rdi
        add     $16, %rsi
        dec     %ecx
        jnz     1b
        lidt    idt_ptr(%rip)
        mov     $0xfee000f0, %eax       /* APIC SVR: software enable */
        movl    $0x1ff, (%rax)
        mov     $0x3f9, %dx             /* COM1 IER: transmit empty */
        mov     $0x02, %al
        outb    %al, %dx
        sti
        mov     $200000, %ecx           /* a few ms even at CPL0 on PVM */
2:      dec     %ecx
        jnz     2b
        cli
        lea     msg_no_irq(%rip), %rdi
        call    puts
        jmp     reset

        .balign 16
vector_stubs:
        .set    vec, 0
        .rept   32
        .balign 16
        push    $vec
        jmp     got_vector
        .set    vec, vec + 1
        .endr
got_vector:
        pop     %rsi
        lea     msg_irq(%rip), %rdi
        call    say_dec
        jmp     reset

        .data
        .balign 16
idt:    .fill   32 * 16, 1, 0
idt_ptr:
        .word   32 * 16 - 1
        .quad   idt
        .text
.endif

.if MODE == 13
        lea     msg_counting(%rip), %rdi
        call    puts
        xor     %ebx, %ebx
        .globl  count_loop, count_done
count_loop:                             /* rip stays in [count_loop, count_done) */
        inc     %rbx
        cmp     $COUNT, %rbx
        jb      count_loop
count_done:
        lea     msg_counted(%rip), %rdi
        mov     %rbx, %rsi
        call    say_dec
        jmp     reset
.endif

.if MODE == 14
        cli
        mov     $VIRTIO_MMIO_BASE, %r13d        /* slot 0: the disk */
        mov     %r13, %rdi
        mov     $VIRTIO_ID_BLOCK, %esi
        call    virtio_init
        /* Queue 0, size 8: the available ring 2 bytes below the used
         * ring, so avail.idx and used.flags are the same 16 bits. */
        mov     %r13, %rdi
        xor     %esi, %esi
        mov     $8, %edx
        lea     q14_desc(%rip), %rcx
        lea     q14_avail(%rip), %r8
        lea     2(%r8), %r9
        call    virtio_queue
        /* Descriptor 0: a lone 1-byte device-writable status byte. */
        lea     q14_desc(%rip), %rdi
        lea     q14_status(%rip), %rax
        mov     %rax, (%rdi)                    /* addr */
        movl    $1, 8(%rdi)                     /* len */
        movw    $VRING_DESC_F_WRITE, 12(%rdi)   /* flags */
        movw    $0, 14(%rdi)                    /* next */
        lea     q14_avail(%rip), %rdi
        movw    $0, 4(%rdi)                     /* avail.ring[0] = 0 */
        /* DRIVER_OK kicks the queue: from the device's first look on,
         * disable/enable notification rewrite avail.idx (1, 0, 1, ...).
         * Not checked: a device that sees through it answers with
         * DEVICE_NEEDS_RESET at once, and the guest goes on regardless. */
        movl    $(VIRTIO_S_ACKNOWLEDGE | VIRTIO_S_DRIVER | VIRTIO_S_FEATURES_OK | VIRTIO_S_DRIVER_OK), VIRTIO_MMIO_STATUS(%r13)
        lea     q14_avail(%rip), %rdi
        movw    $1, 2(%rdi)                     /* avail.idx = 1 */
        movl    $0, VIRTIO_MMIO_QUEUE_NOTIFY(%r13)
        lea     msg_hostile_posted(%rip), %rdi
        call    puts
1:      hlt
        jmp     1b

        .data
        .balign 4096
q14_desc:       .fill   8 * 16, 1, 0
        .balign 4096
        .fill   2, 1, 0
q14_avail:                              /* page + 2: avail at A, used at A + 2 */
        .fill   128, 1, 0
q14_status:     .byte   0xff
        .text
.endif

.if MODE == 15
        lea     msg_flooding(%rip), %rdi
        call    puts
1:      lea     msg_flood_line(%rip), %rdi
        call    puts
        jmp     1b
.endif

.if MODE == 16
        cli
        lea     msg_console_flooding(%rip), %rdi
        call    puts
        mov     $VIRTIO_MMIO_BASE, %r13d        /* slot 0: the console */
        mov     %r13, %rdi
        mov     $VIRTIO_ID_CONSOLE, %esi
        call    virtio_init
        /* Queue 0 (receiveq): ready with an empty ring; queue 1
         * (transmitq): descriptor 0 is the 4 KiB text, device-readable. */
        mov     %r13, %rdi
        xor     %esi, %esi
        mov     $8, %edx
        lea     q16_rx_desc(%rip), %rcx
        lea     q16_rx_avail(%rip), %r8
        lea     q16_rx_used(%rip), %r9
        call    virtio_queue
        mov     %r13, %rdi
        mov     $1, %esi
        mov     $8, %edx
        lea     q16_tx_desc(%rip), %rcx
        lea     q16_tx_avail(%rip), %r8
        lea     q16_tx_used(%rip), %r9
        call    virtio_queue
        mov     %r13, %rdi
        call    virtio_driver_ok
        lea     q16_tx_desc(%rip), %rdi
        lea     flood_text(%rip), %rax
        mov     %rax, (%rdi)
        movl    $4096, 8(%rdi)
        lea     q16_tx_avail(%rip), %r8
        lea     q16_tx_used(%rip), %r9
1:      movzwl  2(%r8), %eax                    /* avail.idx */
        mov     %eax, %ecx
        and     $7, %ecx
        movw    $0, 4(%r8,%rcx,2)               /* avail.ring[idx % 8] = 0 */
        inc     %eax
        movw    %ax, 2(%r8)
        movl    $1, VIRTIO_MMIO_QUEUE_NOTIFY(%r13)
2:      cmpw    %ax, 2(%r9)                     /* until used.idx catches up */
        jne     2b
        jmp     1b

        .data
        .balign 4096
q16_rx_desc:    .fill   8 * 16, 1, 0
q16_rx_avail:   .fill   64, 1, 0
q16_rx_used:    .fill   128, 1, 0
        .balign 4096
q16_tx_desc:    .fill   8 * 16, 1, 0
q16_tx_avail:   .fill   64, 1, 0
q16_tx_used:    .fill   128, 1, 0
        .balign 4096
flood_text:
        .rept   64                      /* 64 lines of 64 bytes */
        .ascii  "ember-tiny: virtio console flood, the same 4 KiB again and again\n"
        .endr
        .text
.endif

.if MODE == 17
        cli
        mov     $VIRTIO_MMIO_BASE, %r13d        /* vda */
        lea     VIRTIO_MMIO_STRIDE(%r13), %r14  /* vdb */
        mov     %r13, %rdi
        mov     $VIRTIO_ID_BLOCK, %esi
        call    virtio_init
        mov     %r13, %rdi
        xor     %esi, %esi
        mov     $8, %edx
        lea     q17a_desc(%rip), %rcx
        lea     q17a_avail(%rip), %r8
        lea     q17a_used(%rip), %r9
        call    virtio_queue
        mov     %r13, %rdi
        call    virtio_driver_ok
        mov     %r14, %rdi
        mov     $VIRTIO_ID_BLOCK, %esi
        call    virtio_init
        mov     %r14, %rdi
        xor     %esi, %esi
        mov     $8, %edx
        lea     q17b_desc(%rip), %rcx
        lea     q17b_avail(%rip), %r8
        lea     q17b_used(%rip), %r9
        call    virtio_queue
        mov     %r14, %rdi
        call    virtio_driver_ok
        /* vda: FLUSH = header (16 bytes) -> status. */
        lea     q17a_desc(%rip), %rdi
        lea     q17a_header(%rip), %rax
        mov     %rax, (%rdi)
        movl    $16, 8(%rdi)
        movw    $VRING_DESC_F_NEXT, 12(%rdi)
        movw    $1, 14(%rdi)
        lea     q17a_status(%rip), %rax
        mov     %rax, 16(%rdi)
        movl    $1, 24(%rdi)
        movw    $VRING_DESC_F_WRITE, 28(%rdi)
        /* vdb: IN, sector 0 = header -> 4 KiB data -> status. */
        lea     q17b_desc(%rip), %rdi
        lea     q17b_header(%rip), %rax
        mov     %rax, (%rdi)
        movl    $16, 8(%rdi)
        movw    $VRING_DESC_F_NEXT, 12(%rdi)
        movw    $1, 14(%rdi)
        lea     q17b_data(%rip), %rax
        mov     %rax, 16(%rdi)
        movl    $4096, 24(%rdi)
        movw    $(VRING_DESC_F_WRITE | VRING_DESC_F_NEXT), 28(%rdi)
        movw    $2, 30(%rdi)
        lea     q17b_status(%rip), %rax
        mov     %rax, 32(%rdi)
        movl    $1, 40(%rdi)
        movw    $VRING_DESC_F_WRITE, 44(%rdi)
        /* Poll. r15: next tick (TSC), r12: ticks, rbx: vdb reads. */
        xor     %r12d, %r12d
        xor     %ebx, %ebx
        call    rdtsc64
        lea     TICK_CYCLES(%rax), %r15
        call    post_flush
        call    post_read
1:      call    rdtsc64
        cmp     %r15, %rax
        jb      2f
        lea     TICK_CYCLES(%rax), %r15
        inc     %r12
        lea     msg_tick(%rip), %rdi
        mov     %r12, %rsi
        call    say_dec
2:      movzwl  q17a_used+2(%rip), %eax
        cmp     %ax, q17a_avail+2(%rip)
        jne     3f                              /* the flush is still out */
        cmpb    $0, q17a_status(%rip)
        jne     bad_flush
        call    post_flush
3:      movzwl  q17b_used+2(%rip), %eax
        cmp     %ax, q17b_avail+2(%rip)
        jne     1b                              /* the read is still out */
        cmpb    $0, q17b_status(%rip)
        jne     bad_read
        inc     %rbx
        lea     msg_vdb_read(%rip), %rdi
        mov     %rbx, %rsi
        call    say_dec
        call    post_read
        jmp     1b

/* post_flush / post_read: make chain 0 available on vda / vdb again and
 * notify queue 0 (one request out at a time: the status byte is reset). */
post_flush:
        movb    $0xff, q17a_status(%rip)
        lea     q17a_avail(%rip), %rdi
        mov     %r13, %rsi
        jmp     post_chain0
post_read:
        movb    $0xff, q17b_status(%rip)
        lea     q17b_avail(%rip), %rdi
        mov     %r14, %rsi
post_chain0:
        movzwl  2(%rdi), %eax
        mov     %eax, %ecx
        and     $7, %ecx
        movw    $0, 4(%rdi,%rcx,2)
        inc     %eax
        movw    %ax, 2(%rdi)
        movl    $0, VIRTIO_MMIO_QUEUE_NOTIFY(%rsi)
        ret
bad_flush:
        lea     msg_bad_flush(%rip), %rdi
        movzbl  q17a_status(%rip), %esi
        call    say_dec
        jmp     reset
bad_read:
        lea     msg_bad_read(%rip), %rdi
        movzbl  q17b_status(%rip), %esi
        call    say_dec
        jmp     reset

/* rdtsc64: the TSC in rax (clobbers rdx). */
rdtsc64:
        rdtsc
        shl     $32, %rdx
        or      %rdx, %rax
        ret

        .data
        .balign 4096
q17a_desc:      .fill   8 * 16, 1, 0
q17a_avail:     .fill   64, 1, 0
q17a_used:      .fill   128, 1, 0
q17a_header:    .long   VIRTIO_BLK_T_FLUSH, 0
                .quad   0
q17a_status:    .byte   0xff
        .balign 4096
q17b_desc:      .fill   8 * 16, 1, 0
q17b_avail:     .fill   64, 1, 0
q17b_used:      .fill   128, 1, 0
q17b_header:    .long   VIRTIO_BLK_T_IN, 0
                .quad   0
q17b_status:    .byte   0xff
        .balign 4096
q17b_data:      .fill   4096, 1, 0
        .text
.endif

bad_zero_page:
        lea     msg_bad_zp(%rip), %rdi
        call    puts
reset:
        mov     $0xfe, %al
        outb    %al, $I8042_CMD
1:      hlt
        jmp     1b

/* getc: wait for a byte on COM1 and return it in al (dx = COM1). */
getc:
        mov     $COM1_LSR, %dx
1:      inb     %dx, %al
        test    $1, %al                 /* data ready */
        jz      1b
        mov     $COM1, %dx
        inb     %dx, %al
        ret

/* say_dec / say_hex: print the string at rdi, then esi in decimal / in
 * hex (8 digits), then a newline. */
say_dec:
        push    %rsi
        call    puts
        pop     %rdi
        call    putdec
        lea     msg_nl(%rip), %rdi
        jmp     puts
say_hex:
        push    %rsi
        call    puts
        pop     %rdi
        call    puthex32
        lea     msg_nl(%rip), %rdi
        jmp     puts

/* puts: print the NUL-terminated string at rdi. */
puts:
        mov     $COM1, %dx
1:      movb    (%rdi), %al
        test    %al, %al
        jz      2f
        outb    %al, %dx
        inc     %rdi
        jmp     1b
2:      ret

/* puthex32: print edi as 8 hex digits. */
puthex32:
        mov     $COM1, %dx
        mov     $8, %ecx
1:      rol     $4, %edi
        mov     %edi, %eax
        and     $0xf, %eax
        cmp     $10, %eax
        jb      2f
        add     $('a' - '0' - 10), %eax
2:      add     $'0', %eax
        outb    %al, %dx
        dec     %ecx
        jnz     1b
        ret

/* virtio_init: bring the virtio-mmio device at rdi, which must have
 * device ID esi, from reset to FEATURES_OK, accepting VERSION_1 only
 * (virtio 1.2 §3.1.1 steps 1-6). Prints why and resets if it cannot. */
virtio_init:
        cmpl    $VIRTIO_MMIO_MAGIC, VIRTIO_MMIO_MAGIC_VALUE(%rdi)
        jne     virtio_absent
        cmpl    $2, VIRTIO_MMIO_VERSION(%rdi)
        jne     virtio_absent
        cmp     VIRTIO_MMIO_DEVICE_ID(%rdi), %esi
        jne     virtio_absent
        movl    $0, VIRTIO_MMIO_STATUS(%rdi)
        movl    $VIRTIO_S_ACKNOWLEDGE, VIRTIO_MMIO_STATUS(%rdi)
        movl    $(VIRTIO_S_ACKNOWLEDGE | VIRTIO_S_DRIVER), VIRTIO_MMIO_STATUS(%rdi)
        movl    $1, VIRTIO_MMIO_DEVICE_FEATURES_SEL(%rdi)
        testl   $1, VIRTIO_MMIO_DEVICE_FEATURES(%rdi)   /* VERSION_1: bit 32 */
        jz      virtio_failed
        movl    $0, VIRTIO_MMIO_DRIVER_FEATURES_SEL(%rdi)
        movl    $0, VIRTIO_MMIO_DRIVER_FEATURES(%rdi)
        movl    $1, VIRTIO_MMIO_DRIVER_FEATURES_SEL(%rdi)
        movl    $1, VIRTIO_MMIO_DRIVER_FEATURES(%rdi)
        movl    $(VIRTIO_S_ACKNOWLEDGE | VIRTIO_S_DRIVER | VIRTIO_S_FEATURES_OK), VIRTIO_MMIO_STATUS(%rdi)
        testl   $VIRTIO_S_FEATURES_OK, VIRTIO_MMIO_STATUS(%rdi)
        jz      virtio_failed
        ret

/* virtio_queue: set up queue esi of the device at rdi with size edx,
 * descriptor table rcx, available ring r8, used ring r9, and mark it
 * ready (step 7). */
virtio_queue:
        mov     %esi, VIRTIO_MMIO_QUEUE_SEL(%rdi)
        cmp     VIRTIO_MMIO_QUEUE_NUM_MAX(%rdi), %edx
        ja      virtio_failed
        mov     %edx, VIRTIO_MMIO_QUEUE_NUM(%rdi)
        mov     %ecx, VIRTIO_MMIO_QUEUE_DESC_LOW(%rdi)
        shr     $32, %rcx
        mov     %ecx, VIRTIO_MMIO_QUEUE_DESC_HIGH(%rdi)
        mov     %r8d, VIRTIO_MMIO_QUEUE_AVAIL_LOW(%rdi)
        shr     $32, %r8
        mov     %r8d, VIRTIO_MMIO_QUEUE_AVAIL_HIGH(%rdi)
        mov     %r9d, VIRTIO_MMIO_QUEUE_USED_LOW(%rdi)
        shr     $32, %r9
        mov     %r9d, VIRTIO_MMIO_QUEUE_USED_HIGH(%rdi)
        movl    $1, VIRTIO_MMIO_QUEUE_READY(%rdi)
        cmpl    $1, VIRTIO_MMIO_QUEUE_READY(%rdi)
        jne     virtio_failed
        ret

/* virtio_driver_ok: set DRIVER_OK (step 8); the device must not ask for
 * a reset. */
virtio_driver_ok:
        movl    $(VIRTIO_S_ACKNOWLEDGE | VIRTIO_S_DRIVER | VIRTIO_S_FEATURES_OK | VIRTIO_S_DRIVER_OK), VIRTIO_MMIO_STATUS(%rdi)
        mov     VIRTIO_MMIO_STATUS(%rdi), %eax
        cmp     $(VIRTIO_S_ACKNOWLEDGE | VIRTIO_S_DRIVER | VIRTIO_S_FEATURES_OK | VIRTIO_S_DRIVER_OK), %eax
        jne     virtio_failed
        ret

virtio_absent:
        lea     msg_virtio_absent(%rip), %rdi
        call    puts
        jmp     reset
virtio_failed:
        mov     VIRTIO_MMIO_STATUS(%rdi), %esi
        lea     msg_virtio_failed(%rip), %rdi
        call    say_hex
        jmp     reset

/* putdec: print rdi (unsigned, 64 bits) in decimal, without leading
 * zeros. Digits by repeated subtraction of powers of ten: no div.
 * Clobbers rax, rcx, rdx, rsi, rdi. */
putdec:
        push    %rbx
        lea     pow10(%rip), %rsi
        xor     %ebx, %ebx              /* digits printed so far */
        mov     $COM1, %dx
1:      mov     (%rsi), %rcx            /* 10^19 down to 10, then 0 */
        test    %rcx, %rcx
        jz      4f
        add     $8, %rsi
        mov     $'0', %eax
2:      cmp     %rcx, %rdi
        jb      3f
        sub     %rcx, %rdi
        inc     %eax
        jmp     2b
3:      cmp     $'0', %al
        jne     5f
        test    %ebx, %ebx
        jz      1b                      /* a leading zero */
5:      outb    %al, %dx
        inc     %ebx
        jmp     1b
4:      lea     '0'(%rdi), %eax         /* the units digit, always */
        outb    %al, %dx
        pop     %rbx
        ret

.ifdef PVH
        .code32
        .globl pvh_start
pvh_start:
        mov     $pvh_stack_top, %esp
        cmpl    $0x336ec578, (%ebx)     /* XEN_HVM_START_MAGIC_VALUE */
        jne     pvh_bad
        mov     $msg_pvh, %esi
        call    puts32
        mov     24(%ebx), %esi          /* cmdline_paddr */
        call    puts32
        mov     $msg_memmap, %esi
        call    puts32
        mov     48(%ebx), %eax          /* memmap_entries (< 10) */
        add     $'0', %al
        mov     $COM1, %dx
        outb    %al, %dx
        mov     $msg_modules, %esi
        call    puts32
        mov     12(%ebx), %eax          /* nr_modules (< 10) */
        add     $'0', %al
        mov     $COM1, %dx
        outb    %al, %dx
        mov     $msg_pvh_no_rsdp, %esi
        mov     32(%ebx), %eax          /* rsdp_paddr (low half) */
        test    %eax, %eax
        jz      1f
        cmpl    $0x20445352, (%eax)     /* "RSD " */
        jne     1f
        mov     $msg_pvh_rsdp, %esi
1:      call    puts32
        mov     $msg_nl, %esi
        call    puts32
        jmp     pvh_reset
pvh_bad:
        mov     $msg_pvh_bad, %esi
        call    puts32
pvh_reset:
        mov     $0xfe, %al
        outb    %al, $I8042_CMD
1:      hlt
        jmp     1b
puts32:
        mov     $COM1, %dx
1:      movb    (%esi), %al
        test    %al, %al
        jz      2f
        outb    %al, %dx
        inc     %esi
        jmp     1b
2:      ret
        .code64

        .section .note.Xen, "a", @note
        .balign 4
        .long   4                       /* namesz: "Xen\0" */
        .long   4                       /* descsz */
        .long   18                      /* XEN_ELFNOTE_PHYS32_ENTRY */
        .asciz  "Xen"
        .balign 4
        .long   pvh_start
        .balign 4
.endif

        .data
msg_linux64:    .asciz "ember-tiny: linux64 zero page HdrS ok, cmdline: "
msg_e820:       .asciz ", e820 entries: "
msg_initrd:     .asciz ", initrd at 0x"
msg_initrd_size: .asciz " size 0x"
msg_int3:       .asciz "ember-tiny: int3 next\n"
msg_bad_zp:     .asciz "ember-tiny: bad zero page\n"
msg_tf:         .asciz "ember-tiny: triple fault next\n"
msg_survived:   .asciz "ember-tiny: survived the fault?!\n"
msg_exit:       .asciz "ember-tiny: reporting exit status 42\n"
msg_panic:      .asciz "ember-tiny: about to fail\nKernel panic - not syncing: tiny test panic\nRebooting in 0 seconds..\n"
msg_mmio:       .asciz "ember-tiny: mmio read 0x"
msg_echo:       .asciz "ember-tiny: echo ready\n"
msg_echo_done:  .asciz "\nember-tiny: echo done, bytes: "
msg_cpus:       .asciz "ember-tiny: mp table cpus: "
msg_bad_mp:     .asciz "ember-tiny: bad mp table\n"
msg_pvh:        .asciz "ember-tiny: pvh start_info magic ok, cmdline: "
msg_memmap:     .asciz ", memmap entries: "
msg_modules:    .asciz ", modules: "
msg_pvh_rsdp:   .asciz ", rsdp: ok"
msg_pvh_no_rsdp: .asciz ", rsdp: none"
msg_pvh_bad:    .asciz "ember-tiny: bad pvh start info\n"
msg_rsdp:       .asciz "ember-tiny: acpi rsdp at 0x"
msg_rsdp_ok:    .asciz " RSD PTR ok"
msg_acpi_reset: .asciz "ember-tiny: acpi reset next\n"
msg_page:       .asciz "ember-tiny: file page word 0x"
msg_irq:        .asciz "ember-tiny: interrupt vector "
msg_no_irq:     .asciz "ember-tiny: no interrupt\n"
msg_nl:         .asciz "\n"
msg_counting:   .asciz "ember-tiny: counting\n"
msg_counted:    .asciz "ember-tiny: counted "
msg_hostile_posted: .asciz "ember-tiny: hostile queue posted\n"
msg_flooding:   .asciz "ember-tiny: flooding\n"
msg_flood_line: .asciz "ember-tiny: serial flood, the same line again and again\n"
msg_console_flooding: .asciz "ember-tiny: console flooding\n"
msg_tick:       .asciz "ember-tiny: tick "
msg_vdb_read:   .asciz "ember-tiny: vdb read "
msg_bad_flush:  .asciz "ember-tiny: vda flush status "
msg_bad_read:   .asciz "ember-tiny: vdb read status "
msg_virtio_absent: .asciz "ember-tiny: no such virtio device\n"
msg_virtio_failed: .asciz "ember-tiny: virtio setup failed, status 0x"
        .balign 8
pow10:
        .quad   10000000000000000000, 1000000000000000000, 100000000000000000
        .quad   10000000000000000, 1000000000000000, 100000000000000
        .quad   10000000000000, 1000000000000, 100000000000, 10000000000
        .quad   1000000000, 100000000, 10000000, 1000000, 100000, 10000
        .quad   1000, 100, 10, 0
        .balign 16
pvh_stack:      .fill 256, 1, 0
pvh_stack_top:
