/*
 * The nested lab's SVM fault, reproduced with nothing but port I/O
 * (resources/lab/io-loop.sh, docs/LAB.md "Guests that triple-fault or
 * spin"). Entered through the 64-bit Linux boot protocol (long mode, the
 * VMM's identity page tables, no IDT): COUNT writes to port 0x80, each one
 * an exit to the VMM, then "io-loop done" on COM1 and exit status 7 on
 * ember's exit-status port 0xf4. On a correct CPU nothing here can fault;
 * a guest resumed with the wrong state triple-faults (no IDT) or spins.
 *
 *   as --64 --defsym COUNT=<n> io-loop.S -o io-loop.o
 *   ld -m elf_x86_64 -N -Ttext=0x100000 -e _start io-loop.o -o io-loop.elf
 */
        .code64
        .globl  _start
_start:
        mov     $COUNT, %rcx
        xor     %eax, %eax
1:      out     %al, $0x80
        inc     %eax
        dec     %rcx
        jnz     1b
        mov     $0x3f8, %dx
        lea     msg(%rip), %rsi
2:      lodsb
        test    %al, %al
        jz      3f
        out     %al, (%dx)
        jmp     2b
3:      mov     $7, %al
        out     %al, $0xf4
4:      hlt
        jmp     4b
msg:    .asciz  "io-loop done\n"
