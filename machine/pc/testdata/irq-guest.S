/*
 * COM1 interrupt test guest (TestSerialInterruptReachesGuest). A flat file
 * that is a PVH ELF, entered in 32-bit protected mode at CPL0. It points
 * IOAPIC pin 4 at vector 0x30, enables the local APIC, turns on the
 * UART's THR-empty interrupt and halts with interrupts on. The vector 0x30
 * handler prints "IRQ4" and powers off; every other vector prints '?'.
 *
 * Build: as --32 -I testdata -o g.o irq-guest.S && ld -m elf_i386 -Ttext=0x100000 -e 0x100000 --oformat binary -o g.bin g.o
 */
	.include "pvh32-header.inc"

entry:
	mov esp, offset stack_top
	lidt [idtr]
	mov dword ptr [0xfec00000], 0x18	/* IOAPIC redirection entry 4, low */
	mov dword ptr [0xfec00010], 0x30	/* vector 0x30, fixed, edge, unmasked */
	mov dword ptr [0xfec00000], 0x19	/* high: destination APIC 0 */
	mov dword ptr [0xfec00010], 0
	mov dword ptr [0xfee000f0], 0x1ff	/* LAPIC software enable */
	mov dx, 0x3fc
	mov al, 0x08				/* MCR: OUT2 gates the IRQ */
	out dx, al
	mov dx, 0x3f9
	mov al, 0x02				/* IER: THR empty */
	out dx, al
	sti
1:	hlt
	jmp 1b

irq4:
	mov dx, 0x3fa				/* read IIR: acknowledges THRE */
	in al, dx
	mov dx, 0x3f9
	xor al, al				/* IER off: no more interrupts */
	out dx, al
	mov dx, 0x3f8
	mov al, 'I'
	out dx, al
	mov al, 'R'
	out dx, al
	mov al, 'Q'
	out dx, al
	mov al, '4'
	out dx, al
	mov dx, 0x604
	mov ax, 0x3400
	out dx, ax
2:	hlt
	jmp 2b

	.include "stubs.inc"

	.balign 8
idt:
	.set v, 0
	.rept 256
	.if v == 0x30
	gate irq4
	.else
	gate "stubs + v * STUB"
	.endif
	.set v, v + 1
	.endr
	guest_tail
