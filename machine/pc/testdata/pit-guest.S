/*
 * PIT interrupt test guest (TestPITReachesIOAPICPin2). A flat PVH ELF
 * entered in 32-bit protected mode at CPL0. It points IOAPIC pin 2 (where
 * the MADT's override puts ISA IRQ 0) at vector 0x30, enables the local
 * APIC, starts PIT channel 0 at 1 kHz and halts with interrupts on. The
 * vector 0x30 handler prints "PIT" and powers off; other vectors print '?'.
 *
 * Build: as --32 -I testdata -o g.o pit-guest.S && ld -m elf_i386 -Ttext=0x100000 -e 0x100000 --oformat binary -o g.bin g.o
 */
	.include "pvh32-header.inc"

entry:
	mov esp, offset stack_top
	lidt [idtr]
	mov dword ptr [0xfec00000], 0x14	/* IOAPIC redirection entry 2, low */
	mov dword ptr [0xfec00010], 0x30	/* vector 0x30, fixed, edge, unmasked */
	mov dword ptr [0xfec00000], 0x15	/* high: destination APIC 0 */
	mov dword ptr [0xfec00010], 0
	mov dword ptr [0xfee000f0], 0x1ff	/* LAPIC software enable */
	mov al, 0x34				/* PIT channel 0, lo/hi byte, mode 2 */
	out 0x43, al
	mov al, 0xa9				/* 1193 = 0x4a9: 1 kHz */
	out 0x40, al
	mov al, 0x04
	out 0x40, al
	sti
1:	hlt
	jmp 1b

irq4:
	mov dx, 0x3f8
	mov al, 'P'
	out dx, al
	mov al, 'I'
	out dx, al
	mov al, 'T'
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
